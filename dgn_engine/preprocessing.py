"""How a classifier wants its pixels: size, channel order, mean and std (numpy only).

model_input[c] = (pixel[c] / 255 - mean[c]) / std[c], channels in `order` ("RGB", "BGR" or "L").
Caffe-style weights (BGR, mean subtracted on the 0..255 scale) are mean = m / 255, std = 1 / 255.
The generator produces model inputs directly; `to_pixels` maps them back to the picture D saw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import UsageError, setting

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048  # beyond 2048 px one target's G would not fit a GPU


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    order: str  # RGB | BGR | L
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if self.order not in ("RGB", "BGR", "L"):
            raise UsageError(f"channel order must be RGB, BGR or L, got {self.order!r}")
        n = self.channels
        if len(self.mean) != n or len(self.std) != n:
            raise UsageError(
                f"{setting('mean')} and {setting('std')} need {n} values each for {self.order} input, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise UsageError(
                f"{setting('mean')} and {setting('std')} must be finite numbers, got {self.mean} and {self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise UsageError(f"{setting('std')} values must be positive")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise UsageError(
                f"{setting('image_size')} must lie between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got "
                f"{self.image_size}"
            )

    @property
    def channels(self) -> int:
        return 1 if self.order == "L" else 3

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3 (RGB) or 1] -> float32 [..., C, H, W] in the classifier's input space."""
        x = pixels.astype(np.float32) / 255.0
        if self.order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """float [..., C, H, W] model input -> uint8 [..., H, W, C] RGB (or L), clipped to 0..255."""
        x = np.moveaxis(np.asarray(x, np.float64), -3, -1)
        x = (x * np.asarray(self.std) + np.asarray(self.mean)) * 255.0
        if self.order == "BGR":
            x = x[..., ::-1]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Preprocessing":
        return Preprocessing(int(d["image_size"]), d["order"], tuple(d["mean"]), tuple(d["std"]))


IMAGENET_TORCHVISION = Preprocessing(224, "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGENET_CAFFE = Preprocessing(224, "BGR", (103.939 / 255, 116.779 / 255, 123.68 / 255), (1 / 255, 1 / 255, 1 / 255))


def display_contrast(pixels: np.ndarray) -> np.ndarray:
    """The picture D saw (uint8 [H, W, C]) stretched to the full 0..255 range: per image, its darkest
    value to 0 and its brightest to 255, one linear map for every channel (colours keep their balance)."""
    p = pixels.astype(np.float64)
    lo, hi = p.min(), p.max()
    return np.clip(np.rint((p - lo) * 255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


def display_original(x: np.ndarray, order: str, sqrt: bool) -> np.ndarray:
    """The original code's display: per-image min-max to 0..1 (then a square root for untrained G)."""
    x = np.moveaxis(np.asarray(x, np.float64), -3, -1)
    lo = x.min(axis=(-3, -2, -1), keepdims=True)
    hi = x.max(axis=(-3, -2, -1), keepdims=True)
    x = (x - lo) / np.maximum(hi - lo, 1e-12)
    if sqrt:
        x = np.sqrt(x)
    if order == "BGR":
        x = x[..., ::-1]
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
