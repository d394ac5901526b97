"""The torch reference backend: the coupled step (exporter/coupled.py) run eagerly, float32, TF32 or
float64, on CPU or CUDA. The one backend that needs torch: the engine imports it only when asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ...errors import UsageError, setting
from ...exporter.fingerprint import made_of
from ...spec import RunSpec
from ...state import initial_state
from ...targets import Target, objective_weights
from .protocol import StepReadout

if TYPE_CHECKING:
    from ...exporter.coupled import CoupledStep

DTYPES = {"float32": torch.float32, "tf32": torch.float32, "float64": torch.float64}


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{setting('device', 'cuda')}: this torch build sees no CUDA device; use {setting('device', 'cpu')}"
        )
    return torch.device(name)


class TorchBackend:
    name = "torch"

    def __init__(
        self, coupled: CoupledStep, precision: str = "float32", device: str = "cpu", labels: list[str] | None = None
    ):
        self.coupled = coupled
        self.dtype, self.device = DTYPES[precision], torch_device(device)
        self.precision = "float32" if precision == "tf32" and self.device.type != "cuda" else precision
        self._made_of = made_of(coupled)  # before the cast: the tensors as loaded
        coupled.to(self.dtype, self.device)
        self.mode = coupled.mode
        self.preprocessing = coupled.classifier.preprocessing
        self.layout = coupled.layout
        self.features = coupled.plan.features
        self.transforms = coupled.transforms
        self.labels = labels or coupled.classifier.labels

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def start(self, targets: list[Target], spec: RunSpec) -> None:
        c = self.coupled
        state = initial_state(c.mode, c.plan, c.optimizer, spec.seed, targets)
        self.state = {n: self._tensor(v) for n, v in state.items()}
        weights, penalty = objective_weights(targets, self.layout, spec.lam)
        self.weights = {n: self._tensor(w) for n, w in weights.items()}
        self.penalty = self._tensor(penalty)
        self.hyper = self._tensor(np.array(spec.hyper()))

    def _math_mode(self) -> None:
        """TF32 only when asked for (torch's own default computes convolutions in TF32 on CUDA)."""
        if self.device.type == "cuda":
            tf32 = self.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32

    def step(self, noise: np.ndarray, read: bool, image: bool, transform: np.ndarray | None = None) -> StepReadout:
        self._math_mode()
        params = self._tensor(transform) if self.transforms else None
        self.state, loss, act, img = self.coupled.step(
            self.state, self._tensor(noise), self.weights, self.penalty, self.hyper, params
        )
        out = StepReadout()
        if read:
            out.loss, out.activation = loss.cpu().numpy(), act.cpu().numpy()
        if image:
            out.image = img.float().cpu().numpy()
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.state = {n: self._tensor(state[n]) for n in self.state}

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {n: v.cpu().numpy() for n, v in self.state.items()}

    def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self._math_mode()
        with torch.no_grad():
            acts = self.coupled.classify(self._tensor(images))
        return {n: a.double().cpu().numpy() for n, a in acts.items()}

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": str(self.device),
            "precision": self.precision,
            "torch": torch.__version__,
        }

    def provenance(self) -> dict:
        return {"backend": self.name, "precision": self.precision, **self._made_of}
