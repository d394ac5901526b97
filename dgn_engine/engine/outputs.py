"""Results' pictures: PNG encoding and decoding, and the median of the kept snapshots."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, 3] or [H, W, 1] -> PNG."""
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_png(path: str, channels: int) -> np.ndarray:
    """PNG file -> uint8 [H, W, channels] (RGB or L)."""
    with open(path, "rb") as f:
        return decode_png(f.read(), channels)


def decode_png(data: bytes, channels: int) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, channels] (RGB or L)."""
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if channels == 1 else arr


def median_image(snapshots: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of the kept snapshots (the original's smoothing of the noisy images)."""
    return np.median(np.stack(snapshots), axis=0).astype(np.float32)
