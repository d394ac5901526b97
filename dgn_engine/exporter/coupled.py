"""G coupled to the frozen D, and one optimisation step of the pair as a pure function.

`CoupledStep.step` is the single definition of the method: the torch reference runs it eagerly
(float32 or float64, CPU or CUDA) and the exporter traces it into the ONNX step graph.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import demo
from ..errors import UsageError, setting
from ..generators import generator, option_problem
from ..kernels.maco import image_magnitude
from ..kernels.objective import objective, regularizer
from ..kernels.transforms import transform
from ..plan import GeneratorPlan
from ..spec import Hyper, RunSpec
from ..state import STEP_COUNT
from ..targets import OUTPUT, PROBABILITY
from ..update_rules import adam, adamax, adamax_step_size, nesterov
from .autoencoder import load_decoder
from .classifiers import Classifier, Tapped, load_classifier
from .scores import probability
from .weights import sha256_file


class CoupledStep:
    """mode (its parameterisation, generators/), G's plan and what stays fixed (a decoder's tensors, a
    magnitude), D with its taps, and the structural choices of the spec (noise kind, regulariser kind,
    optimiser); the numeric settings arrive per call as the `hyper` tensor [lr, beta1, beta2, eps,
    momentum, sigma, reg_weight, target_leak]."""

    def __init__(
        self,
        classifier: Classifier,
        plan: GeneratorPlan,
        spec: RunSpec,
        taps: list[str] = (),
        fixed: dict[str, torch.Tensor] | np.ndarray | None = None,
    ):
        self.classifier, self.plan, self.mode = classifier, plan, spec.mode
        self.generator = generator(spec.mode)
        self.noise_kind, self.reg_kind, self.optimizer = spec.noise.kind, spec.regularizer.kind, spec.optimizer.name
        self.image_range = spec.image_range
        self.transforms = spec.transforms.enabled  # the step then takes the transforms' parameters
        self.taps = list(taps)
        if PROBABILITY in self.taps and classifier.stripped:
            raise UsageError(
                f"layer {PROBABILITY!r} cannot be tapped: the classifier graph reports D's probabilities under "
                f"that name; tap a layer around it, or give {setting('keep_softmax', True)}"
            )
        self.tapped = Tapped(classifier, self.taps)
        self.layout = classifier.layout(self.taps)
        self.fixed = fixed
        self.trainables = list(self.generator.trainable_shapes(plan))

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "CoupledStep":
        self.classifier.module.to(dtype=dtype, device=device)
        if isinstance(self.fixed, dict):
            self.fixed = {k: v.to(dtype=dtype, device=device) for k, v in self.fixed.items()}
        return self

    @property
    def decoder(self) -> dict[str, torch.Tensor] | None:
        """The frozen tensors of G, where it has them (the pretrained decoder's)."""
        return self.fixed if isinstance(self.fixed, dict) else None

    def generate(self, params: dict[str, torch.Tensor], noise: torch.Tensor | None, sigma) -> torch.Tensor:
        """The image D sees, in its input space (made by the mode's parameterisation)."""
        return self.generator.image(self, params, noise, sigma)

    def logits(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's class logits and the taps."""
        out, acts = self.tapped(image)
        return {OUTPUT: out, **acts}

    def classify(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's class outputs after the final ReLU (the paper's replacement of softmax) and the taps; where
        the scores are taken before D's own final normalisation, also the probabilities it makes of them."""
        acts = self.logits(image)
        final = self.classifier.stripped
        extra = {PROBABILITY: probability(acts[OUTPUT], final.probability)} if final else {}
        return {**acts, OUTPUT: F.relu(acts[OUTPUT]), **extra}

    def step(
        self,
        state: dict[str, torch.Tensor],
        noise: torch.Tensor,
        weights: dict[str, torch.Tensor],
        penalty: torch.Tensor,
        hyper: torch.Tensor,
        transform_params: torch.Tensor | None = None,
    ):
        """One step for K targets -> (new state, loss [K], target activation [K], image [K,C,H,W]).

        The image and activation are those of the forward pass before the update; with transforms, D
        sees the image transformed by `transform_params` [K, 4] and the image returned is G's own."""
        if self.transforms != (transform_params is not None):
            raise ValueError("transform parameters are needed exactly when the spec has transforms")
        lr, b1, b2, eps, mu, sigma, reg_weight, leak = Hyper.of(hyper)
        with torch.enable_grad():
            params = {n: state[n].detach().requires_grad_(True) for n in self.trainables}
            image = self.generate(params, noise, sigma)
            seen = image if transform_params is None else transform(image, transform_params)
            activation, pen = objective(self.logits(seen), weights, penalty, leak)
            final_gamma = params.get(f"{self.plan.last_bn()}.weight")
            loss = -activation + pen
            if "alpha" in params:  # pixel mode has no G to regularise
                loss = loss + regularizer(self.reg_kind, reg_weight, params["alpha"], final_gamma)
            grads = torch.autograd.grad(loss.sum(), [params[n] for n in self.trainables])
        new = {}
        t = state[STEP_COUNT] + 1
        step_size = adamax_step_size(t, lr, b1)
        for name, g in zip(self.trainables, grads):
            p = state[name]
            if self.optimizer == "adamax":
                new[name], new[f"m.{name}"], new[f"u.{name}"] = adamax(
                    p, g, state[f"m.{name}"], state[f"u.{name}"], step_size, b1, b2, eps, torch.maximum
                )
            elif self.optimizer == "adam":
                new[name], new[f"m.{name}"], new[f"v.{name}"] = adam(
                    p, g, state[f"m.{name}"], state[f"v.{name}"], t, lr, b1, b2, eps, torch.sqrt
                )
            else:
                new[name], new[f"v.{name}"] = nesterov(p, g, state[f"v.{name}"], lr, mu)
        new[STEP_COUNT] = t
        order = list(state)
        return {n: new[n] for n in order}, loss.detach(), activation.detach(), image.detach()


@dataclass(frozen=True)
class Sources:
    """How to build G and D from files: what `run --backend torch`, `export` and `verify` share."""

    mode: str
    classifier: str = "vgg16"
    weights: str | None = None
    image_size: int | None = None
    channels: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    decoder: str | None = None
    g_width: float | None = None
    seed: int = 0  # of random classifier weights
    spectrum: str | None = None  # maco mode: the photo folder whose mean Fourier magnitude is fixed
    keep_softmax: bool = False  # optimise D's output as it is, a final normalisation included

    def absolute(self) -> "Sources":
        """File paths made absolute, so that a manifest still finds them from elsewhere."""

        def fix(p):
            return os.path.abspath(p) if p and p != "random" and os.path.exists(p) else p

        return Sources(
            **{
                **asdict(self),
                "weights": fix(self.weights),
                "decoder": fix(self.decoder),
                "classifier": fix(self.classifier),
                "spectrum": fix(self.spectrum),
            }
        )

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Sources":
        d = dict(d)
        for k in ("mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return Sources(**d)


def build_coupled(sources: Sources, spec: RunSpec, taps: list[str]) -> CoupledStep:
    classifier = load_classifier(
        sources.classifier,
        sources.weights,
        image_size=sources.image_size,
        channels=sources.channels,
        mean=sources.mean,
        std=sources.std,
        seed=sources.seed,
        keep_softmax=sources.keep_softmax,
    )
    return couple(classifier, spec, taps, sources.decoder, sources.g_width, sources.spectrum)


def couple(
    classifier: Classifier,
    spec: RunSpec,
    taps: list[str],
    decoder: str | None = None,
    g_width: float | None = None,
    spectrum: str | None = None,
) -> CoupledStep:
    """G for this classifier and mode (generators/: its plan from what the mode's one option names, loaded
    here: the decoder file, the embedded demo's own where none is given; G's width; the photo folder whose
    magnitude maco mode keeps) coupled to it."""
    gen = generator(spec.mode)
    given = {"decoder": decoder, "g_width": g_width, "spectrum": spectrum}
    for name, value in given.items():
        if value and (problem := option_problem(spec.mode, name)):
            raise UsageError(problem)
    source = SOURCES[gen.option](given[gen.option], classifier) if gen.option else None
    plan, fixed = gen.make(classifier.preprocessing, spec, source)
    return CoupledStep(classifier, plan, spec, taps, fixed)


def _decoder(path: str | None, classifier: Classifier):
    """The decoder file's (plan, tensors), recorded in D's sources by its digest; the demo brings its own."""
    if not path and classifier.name != demo.NAME:
        return None
    found = path or demo.decoder_weights()
    plan, tensors, _ = load_decoder(found, classifier.preprocessing)
    classifier.sources[path or demo.source_name(found)] = sha256_file(found)
    return plan, tensors


def _width(value: float | None, classifier: Classifier) -> float | None:
    """G's width scale: the one given, the demo's own, else None (the plan's default for D's size)."""
    return value or (demo.G_WIDTH if classifier.name == demo.NAME else None)


def _magnitude(folder: str | None, classifier: Classifier) -> np.ndarray | None:
    """The mean Fourier magnitude of the folder's photos (recorded in D's sources by its digest)."""
    if not folder:
        return None
    import hashlib

    from .autoencoder import load_images

    pp = classifier.preprocessing
    magnitude = image_magnitude(load_images(folder, pp, "spectrum folder"), pp.order)
    key = f"spectrum of {os.path.abspath(folder)}"
    classifier.sources[key] = hashlib.sha256(magnitude.tobytes()).hexdigest()
    return magnitude


SOURCES = {"decoder": _decoder, "g_width": _width, "spectrum": _magnitude}
