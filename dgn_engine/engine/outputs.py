"""Results on disk: PNG + JSON per target, written atomically (temporary file, fsync, rename)."""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private


def atomic_write(path: str, data: bytes) -> None:
    """Either the whole file appears under `path` or nothing changes (also on kill -9)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, 3] or [H, W, 1] -> PNG."""
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_png(path: str, channels: int) -> np.ndarray:
    """PNG -> uint8 [H, W, channels] (RGB or L)."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return arr[..., None] if channels == 1 else arr


def median_image(snapshots: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of the kept snapshots (the original's smoothing of the noisy images)."""
    return np.median(np.stack(snapshots), axis=0).astype(np.float32)
