"""Layers written with ops that export to plain ONNX and differentiate everywhere.

Nearest upsampling is each pixel concatenated with itself along two new axes, then a reshape (no
Resize, whose gradient some runtimes lack; onnxruntime's Expand takes 5x the time of the Concats);
"same" padding with an even kernel is an explicit Pad before a pad-free convolution (asymmetric
conv pads have broken gradients in some runtimes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x[:, :, :, None, :, None]
    x = torch.cat([x, x], dim=5)
    return torch.cat([x, x], dim=3).reshape(n, c, 2 * h, 2 * w)


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pads: tuple[int, int], groups: int = 1
) -> torch.Tensor:
    before, after = pads
    if before or after:
        x = F.pad(x, (before, after, before, after))
    return F.conv2d(x, weight, bias, groups=groups)


def batch_norm_train(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """BatchNorm on the batch's own statistics (biased variance, as Keras normalises)."""
    centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
    var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)  # a product, not a Pow: 5x faster in onnxruntime
    return centred * torch.rsqrt(var + eps) * gamma[None, :, None, None] + beta[None, :, None, None]


def batch_norm_eval(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float
) -> torch.Tensor:
    scale = gamma * torch.rsqrt(var + eps)
    return x * scale[None, :, None, None] + (beta - mean * scale)[None, :, None, None]


# the soft clip's knee: pixels inside [KNEE, 1 - KNEE] pass unchanged
KNEE = 0.1


def soft_pixel_range(x: torch.Tensor, mean, std) -> torch.Tensor:
    """A model-space image made to lie inside the pixel range 0..1, so that nothing the search finds
    is clipped away in the PNG: the identity inside [KNEE, 1 - KNEE], hyperbolic tails outside it
    (value and slope continuous) that approach 0 and 1 without reaching them. Unlike exponential or
    tanh tails they keep a gradient (falling as 1/distance^2) and do not round far-out pixels to the
    same float32 value, whose exact ties would make D's max-pooling choose differently in float32
    and float64."""
    mean = x.new_tensor(mean)[None, :, None, None]
    std = x.new_tensor(std)[None, :, None, None]
    p = x * std + mean
    # each tail's distance is clamped at 0 on the other side, so that neither branch of `where` divides by 0
    low = KNEE * KNEE / (KNEE + torch.clamp(KNEE - p, min=0.0))
    high = 1.0 - KNEE * KNEE / (KNEE + torch.clamp(p - (1.0 - KNEE), min=0.0))
    p = torch.where(p < KNEE, low, torch.where(p > 1.0 - KNEE, high, p))
    return (p - mean) / std
