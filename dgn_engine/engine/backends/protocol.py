"""The one small interface every backend implements (torch reference, ONNX step graph, ...).

A backend holds the coupled G + D for one batch of K targets at a time; the engine drives it with
numpy noise and reads back numbers only when it asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...preprocessing import Preprocessing
from ...spec import RunSpec
from ...targets import Target


@dataclass
class StepReadout:
    loss: np.ndarray | None = None  # [K]
    activation: np.ndarray | None = None  # [K], target activation of the step's forward pass
    image: np.ndarray | None = None  # [K, C, H, W] in the classifier's input space


class Backend(Protocol):
    name: str
    mode: str
    preprocessing: Preprocessing
    layout: dict[str, tuple[int, ...]]  # objective layout: class outputs and tapped layers
    features: int  # length of the feature vector (noise per target and step)
    transforms: bool  # the step takes the transforms' parameters [K, 4] (rng.TransformStreams)
    labels: list[str] | None

    def start(self, targets: list[Target], spec: RunSpec) -> None:
        """Load the initial state and objective weights for these targets (one batch)."""

    def step(self, noise: np.ndarray, read: bool, image: bool, transform: np.ndarray | None = None) -> StepReadout:
        """Advance every target one step; return loss/activation when `read`, the image when `image`.
        `transform`: the parameters D's view of the image is transformed with, where `transforms`."""

    def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """D on model-space images [N, C, H, W]: class outputs (after ReLU) and tapped layers."""

    def describe(self) -> dict:
        """What ran (backend, device, precision, versions), for run.json."""

    def provenance(self) -> dict:
        """What decides the results besides the spec (backend, precision, digests of the artifacts or of
        G's and D's tensors): results resume only into a folder made with the same."""
