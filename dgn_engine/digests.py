"""sha256 digests of files, bytes and JSON-able settings (no torch): what provenance is made of."""

from __future__ import annotations

import hashlib
import json

CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """Streamed, so a weights file of any size costs one read and no memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
