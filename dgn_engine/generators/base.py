"""What every parameterisation of the image owns. The numpy side (shapes, start values, defaults) is
what the engine reads; the torch side (`plan`, `image`) imports only kernels, and only when called,
so the engine never imports torch through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..plan import GeneratorPlan
    from ..preprocessing import Preprocessing
    from ..targets import Target


class Generator:
    name: str
    has_g = True  # a generator network; False: the image itself is parameterised (no feature vector)
    trains_g = False  # all of G is optimised (its last BatchNorm's gamma is what eq. 3 regularises)
    paper = False  # the paper's method, which --paper / paper=True spells out to the letter
    option: str | None = None  # the one source setting it takes (decoder, g_width, spectrum)
    option_is = ""  # what that setting is, in a message
    training_api = True  # the onnxruntime-training backend serves it
    sqrt_original = False  # --display original shows the square root of its min-max (the original code's)

    def defaults(self, image_size: int | None) -> dict[str, Any]:
        """spec.RunSpec's fields for this mode (the paper's Table 1 for G; `image_size`: D's, where known)."""
        raise NotImplementedError

    def trainable_shapes(self, plan: GeneratorPlan) -> dict[str, tuple[int, ...]]:
        """The tensors optimised per target, in the fixed order every backend and graph uses."""
        raise NotImplementedError

    def initial_trainables(self, plan: GeneratorPlan, seed: int, targets: list[Target]) -> dict[str, np.ndarray]:
        """Their start, stacked over the targets (seeded by the seed and each target)."""
        raise NotImplementedError

    def make(self, pp: Preprocessing, spec, source: Any) -> tuple[GeneratorPlan, Any]:
        """(plan, fixed): the plan for D's input format and what stays fixed during the search (a decoder's
        tensors, a magnitude, or None); `source`: what the mode's option loaded (exporter/coupled.py)."""
        raise NotImplementedError

    def image(self, step, params: dict, noise, sigma):
        """The image D sees, in its input space, from the trainables `params` (torch; `step`: the
        CoupledStep, with D's preprocessing, the spec's structure, the plan and what is fixed)."""
        raise NotImplementedError


def image_defaults(lr: float, steps: int) -> dict[str, Any]:
    """The settings of a mode without G (classic feature visualisation's): Adam at `lr`, no feature noise,
    no regulariser of G, the standard transforms."""
    from ..spec import TRANSFORM_PRESETS, Noise, Optimizer, Regularizer

    return dict(
        optimizer=Optimizer("adam", lr, 0.9, 0.999, 1e-8),
        noise=Noise("none", 0.0),
        regularizer=Regularizer("none", 0.0),
        steps=steps,
        transforms=TRANSFORM_PRESETS["standard"],
    )


def feature_vector(step, alpha, noise, sigma, relu: bool):
    """Eq. 1: f = alpha * eps(f0) with f0 = 1 (additive or multiplicative noise, the spec's kind)."""
    f0 = 1.0
    eps = f0 + sigma * noise if step.noise_kind == "additive" else f0 * (1 + sigma * noise)
    f = alpha * eps
    if relu:
        import torch.nn.functional as F

        return F.relu(f)
    return f


def model_space(step, pixels):
    """Pixels in (0, 1) through D's normalisation."""
    pp = step.classifier.preprocessing
    mean, std = pixels.new_tensor(pp.mean)[None, :, None, None], pixels.new_tensor(pp.std)[None, :, None, None]
    return (pixels - mean) / std


def into_range(step, image):
    """G's output as the spec's image range has it: free (the paper's), a colour sigmoid, or soft-clipped
    into the pixel range."""
    from ..kernels.layers import soft_pixel_range
    from ..kernels.pixel import colour_sigmoid

    pp = step.classifier.preprocessing
    if step.image_range == "free":
        return image
    if step.image_range == "sigmoid":
        return model_space(step, colour_sigmoid(image, pp.order))
    return soft_pixel_range(image, pp.mean, pp.std)
