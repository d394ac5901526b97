"""The embedded demo: a small VGG-style Fashion-MNIST classifier and its pretrained decoder, shipped
in the package (dgn_engine/demo_data), so that a fresh install runs end to end (no torch here)."""

from __future__ import annotations

import hashlib
import os

from .preprocessing import Preprocessing
from .spec import RunSpec, default_spec

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data")
NAME = "demo"
CONVS = (16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128, "M")  # 8 conv layers, 32 -> 2 px
HIDDEN = (128,)
CLASSES = 10
PREPROCESSING = Preprocessing(32, "L", (0.2860,), (0.3530,))  # Fashion-MNIST padded to 32 px
G_WIDTH = 0.25  # G's widths: the paper's scaled by a quarter
DISPLAY = "contrast"  # the PNGs stretched to 0..255: the decoder's images are dim (D's top-1 kept, 10/10)
BATCH = 5  # two batches for the ten classes
TAPS = ("features.7", "features.17")  # the 2nd and the last conv layer, for filter targets


def path(name: str) -> str:
    return os.path.join(DATA, name)


def source_name(file_path: str) -> str:
    """How a manifest names a demo file: by its place in the package, not on this disk."""
    return "demo:" + os.path.basename(file_path)


def resolve_source(name: str) -> str:
    return path(name[len("demo:") :]) if name.startswith("demo:") else name


def classifier_weights() -> str:
    return path("classifier.pt")


def decoder_weights() -> str:
    return path("decoder.pt")


def labels() -> list[str]:
    with open(path("labels.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def shipped_artifacts(mode: str) -> str:
    return path(os.path.join("artifacts", mode))


def fingerprint() -> str:
    """Changes whenever the demo's weights change (names the cached export)."""
    h = hashlib.sha256()
    for name in ("classifier.pt", "decoder.pt"):
        with open(path(name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def cache_dir() -> str:
    root = os.environ.get("DGN_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dgn-engine"
    )
    return root


def spec(mode: str) -> RunSpec:
    """The demo's defaults: any 32 px classifier's (spec.default_spec), i.e. the paper's, except in
    untrained mode, where the paper's noise (sigma 2) and learning rate (0.002) are made for its
    5.2M-value G at 224 px: on the demo's 28k-value G they reach the target as the classifier's top-1
    for 1 of 10 classes in 500 steps; sigma 0.5, lr 0.01 and 1,000 steps reach 10 of 10 (see the model
    card)."""
    return default_spec(mode, image_size=PREPROCESSING.image_size)
