"""Deterministic randomness shared by every backend (numpy only).

Each target owns its streams, keyed by (seed, target): a batch of K targets draws exactly what K
single-target runs draw, whatever the batch size, backend or device.
"""

from __future__ import annotations

import math

import numpy as np

from .plan import GeneratorPlan
from .spec import Transforms
from .targets import Target
from .transforms import PARAMETERS, parameters

_INIT, _NOISE, _TRANSFORM = 0, 1, 2


def _generator(seed: int, target: Target, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, target.key, purpose])))


class NoiseStreams:
    """Standard-normal noise on the feature vector, one row per target and step."""

    def __init__(self, seed: int, targets: list[Target], features: int):
        self._rngs = [_generator(seed, t, _NOISE) for t in targets]
        self.features = features

    def next(self) -> np.ndarray:
        return np.stack([rng.standard_normal(self.features) for rng in self._rngs])


class TransformStreams:
    """The transforms' parameters [K, 4], one row per target and step (see transforms.parameters)."""

    def __init__(self, seed: int, targets: list[Target], transforms: Transforms, height: int, width: int):
        self._rngs = [_generator(seed, t, _TRANSFORM) for t in targets]
        self.transforms, self.height, self.width = transforms, height, width

    def next(self) -> np.ndarray:
        uniform = np.stack([rng.random(PARAMETERS) for rng in self._rngs])
        return parameters(uniform, self.transforms, self.height, self.width)


def init_spectrum(shape: tuple[int, ...], seed: int, target: Target) -> np.ndarray:
    """Pixel mode's start: a spectrum of N(0, 0.01) values (a faint grey image, as classic feature
    visualisation starts)."""
    return (0.01 * _generator(seed, target, _INIT).standard_normal(shape)).astype(np.float32)


def init_phase(shape: tuple[int, ...], seed: int, target: Target) -> np.ndarray:
    """maco mode's start: a phase of N(0, 1) values (MACO's)."""
    return _generator(seed, target, _INIT).standard_normal(shape).astype(np.float32)


def init_generator(plan: GeneratorPlan, seed: int, target: Target) -> dict[str, np.ndarray]:
    """A fresh untrained G for one target, as Keras initialises it: Glorot-uniform kernels, zero
    biases, BatchNorm gamma 1 and beta 0; alpha (the 1x1 locally connected layer) starts uniform in
    [0.9, 1.1]. A constant alpha makes G's input constant over space where no noise is added (sigma 0,
    the defaults from 224 px): the first convolution's output is then constant too, its BatchNorm
    normalises rounding errors, and the start is float rounding amplified (float32 and float64 at the
    same state: images 2.2 apart, losses 4.75 and 7.52 on EfficientNet-Lite1)."""
    rng = _generator(seed, target, _INIT)
    params = {}
    for name, shape in plan.param_shapes().items():
        if name.endswith(".weight") and name.startswith("conv"):
            cout, cin, k, _ = shape
            limit = math.sqrt(6.0 / ((cin + cout) * k * k))
            params[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
        elif name == "alpha":
            params[name] = rng.uniform(0.9, 1.1, shape).astype(np.float32)
        elif name.startswith("bn") and name.endswith(".weight"):
            params[name] = np.ones(shape, np.float32)
        else:
            params[name] = np.zeros(shape, np.float32)
    return params
