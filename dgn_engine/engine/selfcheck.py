"""verify --no-torch: a backend (the step graph, or the training model) checked against the
artifacts' own G and D graphs, no torch.

From a target's initial state, one step of the backend must (1) render the image that
render.onnx renders from the same state and noise, (2) report the loss that classifier.onnx and the
objective give on that image, and (3) move the state along the gradient that finite differences of
that loss measure (read from the optimiser's first-step slots: Nesterov v = -lr g, AdaMax
m = (1 - beta1) g), along the gradient itself and along random directions (the error of a
directional derivative is taken relative to |g| |d|: a random direction's derivative is a sum of
terms of both signs). The target term is checked with the paper's plain ReLU
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
        self.render = session(art.graph("render"), backend.providers)
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


def selfcheck(art, device: str = "cpu", directions: int = 3, log=print, backend: str = "step-graph") -> bool:
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
        n: (-after[f"v.{n}"] / o.lr if o.name == "nesterov" else after[f"m.{n}"] / (1 - o.beta1))
        for n in graph_loss.trainables
    }
    rng = np.random.default_rng(0)
    grad_norm = np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in grad.values()))
    grad_err = 0.0
    for i in range(directions):
        d = {n: (grad[n].astype(np.float64) if i == 0 else rng.standard_normal(p.shape)) for n, p in params.items()}
        d_norm = np.sqrt(sum((v**2).sum() for v in d.values()))
        # a step of length 3e-4: the float32 loss's rounding (divided by 2h) grows below it and the kinks
        # of G's ReLUs and of the soft clip's knees above it (untrained demo: 1e-4 gives 2.6e-2, 3e-4
        # 7e-3, 1e-3 2e-1; pretrained demo 9e-4, 7e-4, 3e-3)
        h = 3e-4 / d_norm
        plus = graph_loss({n: p + h * d[n] for n, p in params.items()}).sum()
        minus = graph_loss({n: p - h * d[n] for n, p in params.items()}).sum()
        numeric = (plus - minus) / (2 * h)
        analytic = sum((grad[n] * d[n]).sum() for n in params)
        grad_err = max(grad_err, abs(numeric - analytic) / max(grad_norm * d_norm, 1e-30))
    ok = image_err <= IMAGE_TOL and loss_err <= LOSS_TOL and grad_err <= GRADIENT_TOL
    log(
        f"{backend.name} backend against the artifacts' own G and D graphs "
        f"({len(targets)} targets, {backend.device_type}):"
    )
    log(
        f"  image {image_err:.2e} (tolerance {IMAGE_TOL:.0e})  loss {loss_err:.2e} (tolerance {LOSS_TOL:.0e})  "
        f"gradient along {directions} directions {grad_err:.2e} (tolerance {GRADIENT_TOL:.0e})  "
        f"{'ok' if ok else 'FAILED'}"
    )
    return ok
