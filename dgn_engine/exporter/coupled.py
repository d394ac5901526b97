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
from ..kernels.layers import soft_pixel_range
from ..kernels.maco import image_magnitude, maco_image, power_law_magnitude
from ..kernels.objective import objective, regularizer
from ..kernels.pixel import colour_sigmoid, pixel_image
from ..kernels.transforms import transform
from ..plan import GeneratorPlan, generator_plan, pixel_plan, untrained_width
from ..spec import PIXEL_MODES, Hyper, RunSpec
from ..state import STEP_COUNT, trainable_shapes
from ..targets import OUTPUT, PROBABILITY
from ..update_rules import adam, adamax, adamax_step_size, nesterov
from .autoencoder import load_decoder
from .classifiers import Classifier, Tapped, load_classifier
from .generator import frozen_generator, generator_forward, stacked_generator
from .scores import probability
from .weights import sha256_file


class CoupledStep:
    """mode, G's plan, D with its taps, and the structural choices of the spec (noise kind,
    regulariser kind, optimiser); the numeric settings arrive per call as the `hyper` tensor
    [lr, beta1, beta2, eps, momentum, sigma, reg_weight, target_leak]."""

    def __init__(
        self,
        classifier: Classifier,
        plan: GeneratorPlan,
        spec: RunSpec,
        taps: list[str] = (),
        decoder: dict[str, torch.Tensor] | None = None,
        magnitude: np.ndarray | None = None,
    ):
        if spec.mode == "pretrained" and decoder is None:
            raise ValueError("pretrained mode needs the decoder's tensors")
        self.classifier, self.plan, self.mode = classifier, plan, spec.mode
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
        self.decoder = decoder
        self.magnitude = magnitude  # maco mode's fixed Fourier magnitude [C, S, S//2+1]
        self.trainables = list(trainable_shapes(self.mode, plan))

    def to(self, dtype: torch.dtype, device: str | torch.device = "cpu") -> "CoupledStep":
        self.classifier.module.to(dtype=dtype, device=device)
        if self.decoder is not None:
            self.decoder = {k: v.to(dtype=dtype, device=device) for k, v in self.decoder.items()}
        return self

    def features(self, alpha: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
        """Eq. 1: f = alpha * eps(f0) with f0 = 1; the decoder's alpha passes a ReLU (original code)."""
        f0 = 1.0
        eps = f0 + sigma * noise if self.noise_kind == "additive" else f0 * (1 + sigma * noise)
        f = alpha * eps
        return F.relu(f) if self.mode == "pretrained" else f

    def generate(self, params: dict[str, torch.Tensor], noise: torch.Tensor | None, sigma) -> torch.Tensor:
        """The image D sees, in its input space."""
        pp = self.classifier.preprocessing
        if self.mode == "maco":
            phase = params["phase"]
            return self._model_space(maco_image(phase, phase.new_tensor(self.magnitude), pp.order))
        if self.mode == "pixel":
            return self._model_space(pixel_image(params["spectrum"], pp.order))
        f = self.features(params["alpha"], noise, sigma)
        if self.mode == "untrained":
            image = generator_forward(self.plan, f, *stacked_generator(self.plan, params), groups=f.shape[0])
        else:
            image = generator_forward(self.plan, f, *frozen_generator(self.decoder))
        if self.image_range == "free":
            return image
        if self.image_range == "sigmoid":
            return self._model_space(colour_sigmoid(image, pp.order))
        return soft_pixel_range(image, pp.mean, pp.std)

    def _model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in (0, 1) through D's normalisation."""
        pp = self.classifier.preprocessing
        mean, std = pixels.new_tensor(pp.mean)[None, :, None, None], pixels.new_tensor(pp.std)[None, :, None, None]
        return (pixels - mean) / std

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
    """G for this classifier and mode (the decoder file in pretrained mode; the embedded demo brings
    its own; maco mode's magnitude from the photos in the folder `spectrum`, else a power law) coupled to it."""
    pp = classifier.preprocessing
    is_demo = classifier.name == demo.NAME
    if spectrum and spec.mode != "maco":
        raise UsageError("a spectrum folder is maco mode's fixed Fourier magnitude; use mode maco or leave it out")
    if spec.mode in PIXEL_MODES:
        if decoder or g_width:
            raise UsageError(
                f"{spec.mode} mode optimises the image itself: leave out {setting('decoder')} and {setting('g_width')}"
            )
        plan = pixel_plan(pp.image_size, pp.channels)
        magnitude = _magnitude(spectrum, pp, classifier.sources) if spec.mode == "maco" else None
        return CoupledStep(classifier, plan, spec, taps, magnitude=magnitude)
    elif spec.mode == "pretrained":
        path = decoder or (demo.decoder_weights() if is_demo else None)
        if not path:
            raise UsageError(
                f"{setting('mode', 'pretrained')} needs {setting('decoder')} (make one with dgn-engine train-decoder), "
                f"or use {setting('mode', 'untrained')}"
            )
        plan, tensors, _ = load_decoder(path, pp)
        key = demo.source_name(path) if not decoder else path
        classifier.sources[key] = sha256_file(path)
    else:
        width = g_width or (demo.G_WIDTH if is_demo else untrained_width(pp.image_size, spec.image_range))
        linear = spec.image_range == "sigmoid"
        plan, tensors = generator_plan("untrained", pp.image_size, pp.channels, width, linear), None
    return CoupledStep(classifier, plan, spec, taps, tensors)


def _magnitude(folder: str | None, pp, sources: dict[str, str]) -> np.ndarray:
    """maco mode's magnitude: the mean of the folder's photos (recorded in `sources` by its digest), else
    the 1/f power law."""
    if not folder:
        return power_law_magnitude(pp.channels, pp.image_size)
    import hashlib

    from .autoencoder import load_images

    magnitude = image_magnitude(load_images(folder, pp, "spectrum folder"), pp.order)
    sources[f"spectrum of {os.path.abspath(folder)}"] = hashlib.sha256(magnitude.tobytes()).hexdigest()
    return magnitude
