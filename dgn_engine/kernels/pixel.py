"""The classic baseline's image (pixel mode): no generator, the image itself is optimised, in the
parameterisation classic feature visualisation uses (Olah et al., "Feature Visualization", 2017):
a Fourier spectrum scaled by 1/frequency, decorrelated colours, and a sigmoid into the pixel range.

The inverse DFT is written as products with cosine and sine matrices (plain MatMul in ONNX, whose
gradient is MatMul again), not as an FFT op.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

# The square root of the colour correlation of ImageNet photos (RGB), as classic feature visualisation
# uses it; scaled so that its largest column has norm 1.
_RGB_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


@lru_cache(maxsize=8)  # the eager reference asks every step
def frequency_scale(size: int) -> np.ndarray:
    """1 / frequency (at least 1 / size) times size: each frequency's amplitude starts where natural
    images have it, so every frequency moves at a comparable pace."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return size / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)


@lru_cache(maxsize=8)
def fourier_bases(size: int) -> tuple[np.ndarray, ...]:
    """(cos, sin) over rows [size, size] and (cos, sin) over the half columns [size, size//2+1], the
    columns weighted by how often their frequency counts in the full spectrum (the middle ones twice)."""
    n = np.arange(size)
    rows = 2 * math.pi * np.outer(n, n) / size
    half = np.arange(size // 2 + 1)
    cols = 2 * math.pi * np.outer(n, half) / size
    weight = np.where((half == 0) | (2 * half == size), 1.0, 2.0)[None, :]
    return np.cos(rows), np.sin(rows), np.cos(cols) * weight, np.sin(cols) * weight


def colour_matrix(order: str) -> np.ndarray:
    """D's channel order: RGB or BGR get the decorrelating matrix (in that order); grey gets 1."""
    if order == "L":
        return np.eye(1)
    m = _RGB_CORRELATION_SQRT / np.linalg.norm(_RGB_CORRELATION_SQRT, axis=0).max()
    return m[::-1, ::-1].copy() if order == "BGR" else m


def pixel_image(spectrum: torch.Tensor, order: str) -> torch.Tensor:
    """spectrum [K, C, 2 (real, imaginary), S, S//2+1] -> image [K, C, S, S] with pixels in (0, 1)."""
    size = spectrum.shape[3]
    like = {"dtype": spectrum.dtype, "device": spectrum.device}
    scaled = spectrum * torch.as_tensor(frequency_scale(size), **like)
    re, im = scaled.unbind(2)  # whose gradient is one concatenation, where two selections' is two masked fills
    return colour_sigmoid(inverse_dft(re, im) / (4.0 * size * size), order)


def inverse_dft(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Re(sum_uv X[u,v] exp(2 pi i (u y + v x) / S)) of a half spectrum X = re + i im [..., S, S//2+1]
    -> [..., S, S], split into real matrix products."""
    like = {"dtype": re.dtype, "device": re.device}
    cos_r, sin_r, cos_c, sin_c = (torch.as_tensor(m, **like) for m in fourier_bases(re.shape[-2]))
    return cos_r @ re @ cos_c.T - sin_r @ re @ sin_c.T - sin_r @ im @ cos_c.T - cos_r @ im @ sin_c.T


def colour_sigmoid(x: torch.Tensor, order: str) -> torch.Tensor:
    """Decorrelated colour channels [K, C, H, W] -> D's channel order with pixels in (0, 1)."""
    colours = torch.as_tensor(colour_matrix(order), dtype=x.dtype, device=x.device)
    # a 1x1 convolution, not a product over moved axes: no transposes of the image in the graph
    return torch.sigmoid(torch.nn.functional.conv2d(x, colours[:, :, None, None]))
