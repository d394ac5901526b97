"""verify --no-torch: a backend (the step graph, or the training model) checked against the
artifacts' own G and D graphs, no torch.

From a target's initial state, one step of the backend must (1) render the image that
render.onnx renders from the same state and noise, (2) report the loss that classifier.onnx and the
objective give on that image, and (3) move the state along the gradient that finite differences of
that loss measure (read from the optimiser's first-step slots: Nesterov v = -lr g, AdaMax
m = (1 - beta1) g), per target along the directions `gradient_directions` lists. The target term is
checked with the paper's plain ReLU
(leak 0), so D's ReLU'd outputs give the loss exactly. With transforms, D's view is the rendered image
resampled by transforms.resample (numpy) with the step's parameters.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..rng import NoiseStreams
from ..targets import Target, Term, objective_loss, objective_weights, parse_target
from ..transforms import resample
from .backends.onnx_session import session
from .loop import transform_streams

IMAGE_TOL = 1e-4  # relative; the same float32 ops in two graphs, maybe fused differently
LOSS_TOL = 1e-4
GRADIENT_TOL = 2e-2  # central differences in float32: truncation plus rounding of the loss
STEP_LENGTHS = (3e-6, 1e-5, 3e-5, 1e-4)  # of a central difference, in each target's parameter space


def verify_targets(art) -> list[Target]:
    """K targets for a check: classes, and a channel of the first tapped layer where there is one."""
    n = art.manifest["num_classes"]
    targets = [Target((Term("class", i % n),)) for i in range(art.batch)]
    if art.manifest["taps"] and art.batch > 1:
        targets[-1] = parse_target(f"channel:{art.manifest['taps'][0]}:0")
    elif art.manifest["taps"]:
        targets[0] = parse_target(f"class:0+channel:{art.manifest['taps'][0]}:0")
    return targets


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(b)), 1e-30))


class _GraphLoss:
    """The loss of every target from the trainables, through render.onnx and classifier.onnx."""

    def __init__(self, art, backend, spec, targets, noise, transform=None):
        self.render = session(art.graph("render"), backend.providers, weights_bytes=art.weights_bytes)
        self.trainables = [i.name for i in self.render.get_inputs() if i.name not in ("noise", "hyper")]
        self.backend, self.spec, self.noise = backend, spec, noise.astype(np.float32)
        self.hyper = np.array(spec.hyper(), np.float32)
        self.weights, self.penalty = objective_weights(targets, art.layout, spec.lam)
        self.last_bn = art.plan.last_bn()
        self.transform = transform

    def image(self, params: dict) -> np.ndarray:
        feeds = {n: params[n].astype(np.float32) for n in self.trainables}
        if self.backend.features:  # pixel mode's render graph takes no noise
            feeds.update(noise=self.noise, hyper=self.hyper)
        return self.render.run(None, feeds)[0]

    def __call__(self, params: dict) -> np.ndarray:
        image = self.image(params)
        if self.transform is not None:
            image = resample(image, self.transform).astype(np.float32)
        loss = objective_loss(self.weights, self.penalty, self.backend.classify(image))
        reg = self.spec.regularizer
        alpha = params["alpha"].astype(np.float64) if "alpha" in params else None
        if reg.kind == "l2-alpha":
            loss = loss + reg.weight * np.sqrt((alpha**2).sum(1))
        elif reg.kind == "l2sq-alpha":
            loss = loss + reg.weight * (alpha**2).sum(1)
        elif reg.kind == "l1-final-gamma":
            loss = loss + reg.weight * np.abs(params[f"{self.last_bn}.weight"]).sum(1)
        return loss


def _per_target(tensors: dict) -> np.ndarray:
    return np.sqrt(sum((v.reshape(len(v), -1) ** 2).sum(1) for v in tensors.values()))


def gradient_directions(grad: dict, rng):
    """The directions each target's gradient g is checked along, one at a time ({tensor: its part of the
    direction}, tensors left out being 0), each with the scale its error is measured against (per
    target, times |d|):
    - g itself, against |g|: a scale error;
    - g's part in each tensor, or in each quarter of a tensor holding a tenth of |g| or more, against
      that part's norm where it is a quarter of |g| or more (else |g|): a layer's gradient transposed,
      mixed up, or off by a few percent while the whole stays nearly parallel to the truth;
    - a random direction in each tensor, against |g| / sqrt(size of t), its expected share, but at most
      2x more sensitive than along g (float32 differences along a random direction are exact to 1e-4
      |g| |d| on the untrained demo, 6e-3 on MACO's phases): a tensor whose gradient is missing or lacks
      a term, so its own part cannot show it.
    The scales are what float32 differences allow: a part of a sixth of |g| was inexact by 3e-2 of its
    norm at the best of the step lengths (MACO), and an error spread evenly over N entries shows
    along any direction by about 1/sqrt(N) of it, or by its square along g."""
    g = _per_target(grad)
    yield grad, g
    for name, v in grad.items():
        flat = v.reshape(len(v), -1)
        pieces = 4 if (_per_target({name: v}) >= 0.1 * g).any() and flat.shape[1] >= 4 else 1
        for piece in np.array_split(np.arange(flat.shape[1]), pieces):
            part = np.zeros_like(flat)
            part[:, piece] = flat[:, piece]
            norm = np.sqrt((part**2).sum(1))
            yield {name: part.reshape(v.shape)}, np.where(norm >= 0.25 * g, norm, g)
        yield {name: rng.standard_normal(v.shape)}, g * max(flat.shape[1] ** -0.5, 0.5)


def directional_error(graph_loss, params: dict, grad: dict, d: dict, scale: np.ndarray) -> float:
    """The worst target's |finite difference of its own loss - g . d| / (scale |d|) along d (a target's
    trainables move only its own loss). Of the step lengths the best is kept: a wrong gradient is
    wrong at all of them, a right one exact at one of them (the float32 loss's rounding, divided by the step,
    dominates short steps on small gradients; the kinks of ReLUs and of the soft clip's knees long
    steps on steep directions)."""
    d_norm = _per_target(d)
    analytic = sum((grad[n] * d[n]).reshape(len(d[n]), -1).sum(1) for n in d)
    best = np.full(len(d_norm), np.inf)
    for length in STEP_LENGTHS:
        h = (length / np.maximum(d_norm, 1e-30))[:, None]

        def moved(sign, h=h):
            return {
                n: p + sign * (h * d[n].reshape(len(p), -1)).reshape(p.shape) if n in d else p
                for n, p in params.items()
            }

        numeric = (graph_loss(moved(1)) - graph_loss(moved(-1))) / (2 * h[:, 0])
        best = np.minimum(best, np.abs(numeric - analytic) / np.maximum(scale * d_norm, 1e-30))
    return float(np.where(d_norm > 0, best, 0.0).max())


def selfcheck(art, device: str = "cpu", log=print, backend: str = "step-graph") -> bool:
    from .backends import engine_backend

    backend = engine_backend(backend, art, device)
    spec = replace(art.spec, target_leak=0.0)
    targets = verify_targets(art)
    backend.start(targets, spec)
    before = backend.state_arrays()
    noise = NoiseStreams(spec.seed, targets, backend.features).next()
    transforms = transform_streams(backend, spec, targets)
    transform = transforms.next() if transforms else None
    out = backend.step(noise, read=True, image=True, transform=transform)
    after = backend.state_arrays()
    graph_loss = _GraphLoss(art, backend, spec, targets, noise, transform)
    params = {n: before[n].astype(np.float64) for n in graph_loss.trainables}
    image_err = _rel(out.image, graph_loss.image(params))
    loss_err = float(np.abs(graph_loss(params) - out.loss).max() / max(np.abs(out.loss).max(), 1e-12))
    o = spec.optimizer
    grad = {
        n: (-after[f"v.{n}"] / o.lr if o.name == "nesterov" else after[f"m.{n}"] / (1 - o.beta1)).astype(np.float64)
        for n in graph_loss.trainables
    }
    errors = [
        directional_error(graph_loss, params, grad, d, s)
        for d, s in gradient_directions(grad, np.random.default_rng(0))
    ]
    grad_err = max(errors)
    ok = image_err <= IMAGE_TOL and loss_err <= LOSS_TOL and grad_err <= GRADIENT_TOL
    log(
        f"{backend.name} backend against the artifacts' own G and D graphs "
        f"({len(targets)} targets, {backend.device_type}):"
    )
    log(
        f"  image {image_err:.2e} (tolerance {IMAGE_TOL:.0e})  loss {loss_err:.2e} (tolerance {LOSS_TOL:.0e})  "
        f"gradient along {len(errors)} directions per target {grad_err:.2e} (tolerance {GRADIENT_TOL:.0e})  "
        f"{'ok' if ok else 'FAILED'}"
    )
    return ok
