"""Transformation robustness: the image D sees is G's image shifted, scaled and rotated.

The parameters come in as a tensor (drawn by the engine's seeded streams, rng.TransformStreams), so
the graph holds no randomness. Resampling is bilinear with the border pixels repeated, written as
four gathers: their gradient is a scatter-add, which ONNX has (no grid_sample, whose gradient it lacks).
"""

from __future__ import annotations

import torch

# the columns of the parameter tensor [K, 4]
SHIFT_X, SHIFT_Y, SCALE, ANGLE = range(4)
PARAMETERS = 4


def transform(image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """image [K, C, H, W], params [K, 4] = (shift x, shift y in pixels, scale, angle in radians): each
    image scaled and rotated about its centre, then shifted. Identity parameters return the image."""
    k, c, h, w = image.shape
    dx, dy, scale, angle = (params[:, i, None, None] for i in range(PARAMETERS))
    cos, sin = torch.cos(angle), torch.sin(angle)
    v = torch.arange(h, dtype=image.dtype, device=image.device)[None, :, None] - (h - 1) / 2
    u = torch.arange(w, dtype=image.dtype, device=image.device)[None, None, :] - (w - 1) / 2
    # where each output pixel samples: the inverse map, (u, v) - shift rotated back by -angle, / scale
    du, dv = u - dx, v - dy
    # outside the image the border pixel repeats: the sampling point is clamped into it
    x = torch.clamp((cos * du + sin * dv) / scale + (w - 1) / 2, 0, w - 1)
    y = torch.clamp((cos * dv - sin * du) / scale + (h - 1) / 2, 0, h - 1)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    # the right and lower neighbours; on the last column or row their weight is 0
    x1, y1 = torch.minimum(x0 + 1, torch.full_like(x0, w - 1)), torch.minimum(y0 + 1, torch.full_like(y0, h - 1))
    flat = image.reshape(k, c, h * w)

    def at(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        index = (yi * w + xi).reshape(k, 1, h * w).expand(k, c, h * w)
        return torch.gather(flat, 2, index).reshape(k, c, h, w)

    top = at(x0, y0) * (1 - fx) + at(x1, y0) * fx
    bottom = at(x0, y1) * (1 - fx) + at(x1, y1) * fx
    return top * (1 - fy) + bottom * fy
