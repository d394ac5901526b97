"""The transforms' parameters and a numpy resampler (no torch): what every backend feeds its step and
what the self-check recomputes. The graphs' own resampler is kernels/transforms.py; both follow
one definition, checked against each other in the tests."""

from __future__ import annotations

import math

import numpy as np

from .spec import Transforms

PARAMETERS = 4  # per target and step: shift x, shift y (pixels), scale, angle (radians)


def parameters(uniform: np.ndarray, transforms: Transforms, height: int, width: int) -> np.ndarray:
    """uniform [K, 4] in [0, 1) -> parameters [K, 4], each drawn uniformly from its range."""
    spread = 2 * uniform - 1
    return np.stack(
        [
            spread[:, 0] * transforms.jitter * width,
            spread[:, 1] * transforms.jitter * height,
            1 + spread[:, 2] * transforms.scale,
            spread[:, 3] * math.radians(transforms.rotate),
        ],
        axis=1,
    ).astype(np.float32)


def identity(k: int) -> np.ndarray:
    return np.tile(np.array([[0, 0, 1, 0]], np.float32), (k, 1))


def resample(images: np.ndarray, params: np.ndarray) -> np.ndarray:
    """images [K, C, H, W] scaled and rotated about their centres by params [K, 4], then shifted;
    bilinear, the border pixels repeated outside."""
    k, c, h, w = images.shape
    out = np.empty(images.shape, np.float64)
    v, u = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    for i, (dx, dy, scale, angle) in enumerate(np.asarray(params, np.float64)):
        du, dv = u - dx, v - dy
        x = np.clip((math.cos(angle) * du + math.sin(angle) * dv) / scale + (w - 1) / 2, 0, w - 1)
        y = np.clip((math.cos(angle) * dv - math.sin(angle) * du) / scale + (h - 1) / 2, 0, h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = x - x0, y - y0
        img = images[i].astype(np.float64)
        top = img[:, y0, x0] * (1 - fx) + img[:, y0, x1] * fx
        bottom = img[:, y1, x0] * (1 - fx) + img[:, y1, x1] * fx
        out[i] = top * (1 - fy) + bottom * fy
    return out
