"""The default backend: the exported step graph in onnxruntime, on CUDA or CPU.

The state lives in two sets of OrtValues on the device for the whole batch: each step reads one
set and writes the other (IOBinding, ping-pong; an output must never alias its own input), so the
only per-step traffic is the noise going in and, when asked for, the loss, activation and image
coming out.
"""

from __future__ import annotations

import numpy as np

from ...artifacts import Artifacts
from ...errors import UsageError, setting
from ...spec import RunSpec
from ...state import initial_state
from ...targets import Target, objective_weights
from .base import ArtifactsBackend
from .onnx_session import check_io, ort, pad_rows, session
from .protocol import StepReadout


class StepGraphBackend(ArtifactsBackend):
    name = "step-graph"

    def __init__(self, art: Artifacts, device: str = "auto", threads: int | None = None, precision: str = "float32"):
        super().__init__(art, device, threads, precision)
        if self.device_type == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime-gpu lists CUDA even where it cannot start (no GPU, no CUDA libraries)
            if device == "cuda":
                raise UsageError(
                    f"{setting('device', 'cuda')}: onnxruntime-gpu could not start its CUDA provider (no GPU "
                    f"visible, or the CUDA 13 / cuDNN 9 libraries are missing); use {setting('device', 'cpu')}"
                )
            self.providers, self.device_type, self.precision = ["CPUExecutionProvider"], "cpu", "float32"
        self.state_names = [s["name"] for s in art.manifest["state"]]
        self.binding = None

    def load(self) -> None:
        self.session = session(
            self.art.graph("step"), self.providers, self.threads, weights_bytes=self.art.weights_bytes
        )
        check_io(self.session, self.art.manifest["graphs"]["step"], self.art.graph("step"))

    def _value(self, array: np.ndarray):
        return ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, np.float32), self.device_type, 0)

    def start(self, targets: list[Target], spec: RunSpec) -> None:
        padded = self.padded(targets, spec)
        state = initial_state(self.mode, self.plan, spec.optimizer.name, spec.seed, padded)
        weights, penalty = objective_weights(padded, self.layout, spec.lam)
        self.state = [self._value(state[n]) for n in self.state_names]
        self.spare = [self._value(np.zeros_like(state[n])) for n in self.state_names]
        self.binding = self.session.io_binding()
        # A bound CPU OrtValue may view the numpy array it was made from: keep both alive while bound.
        self.inputs = {f"weight.{name}": self._value(w) for name, w in weights.items()}
        self.inputs.update(penalty=self._value(penalty), hyper=self._value(np.array(spec.hyper())))
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        self.readouts = {}
        for o in self.session.get_outputs():
            if not o.name.startswith("new."):
                shape = [self.k if d is None or isinstance(d, str) else d for d in o.shape]
                self.readouts[o.name] = ort().OrtValue.ortvalue_from_shape_and_type(
                    shape, np.float32, self.device_type, 0
                )
                self.binding.bind_ortvalue_output(o.name, self.readouts[o.name])

    def step(self, noise: np.ndarray, read: bool, image: bool, transform: np.ndarray | None = None) -> StepReadout:
        b = self.binding
        for name, current, spare in zip(self.state_names, self.state, self.spare):
            b.bind_ortvalue_input(name, current)
            b.bind_ortvalue_output(f"new.{name}", spare)
        if self.features:  # pixel mode's graph takes no noise
            self.inputs["noise"] = self._value(pad_rows(noise, self.k))
            b.bind_ortvalue_input("noise", self.inputs["noise"])
        if self.transforms:
            self.inputs["transform"] = self._value(pad_rows(transform, self.k))
            b.bind_ortvalue_input("transform", self.inputs["transform"])
        self.session.run_with_iobinding(b)
        self.state, self.spare = self.spare, self.state
        result = StepReadout()
        if read:  # copies: on the CPU an OrtValue's numpy() is a view the next step overwrites
            result.loss = self.readouts["loss"].numpy()[: self.n].copy()
            result.activation = self.readouts["activation"].numpy()[: self.n].copy()
        if image:
            result.image = self.readouts["image"].numpy()[: self.n].copy()
        return result

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the current state (real rows; verification steps every path from one state)."""
        for i, name in enumerate(self.state_names):
            value = state[name] if name == "t" else pad_rows(np.asarray(state[name]), self.k)
            self.state[i] = self._value(value)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The current state on the host (for verification), real rows only except for t."""
        return {
            n: (v.numpy() if n == "t" else v.numpy()[: self.n]).copy() for n, v in zip(self.state_names, self.state)
        }

    def describe(self) -> dict:
        rt = ort()
        return {
            "backend": self.name,
            "device": self.device_type,
            "precision": self.precision,
            "onnxruntime": rt.__version__,
            "providers": self.providers,
            "artifacts": self.art.path,
            "manifest_sha256": self.art.manifest_sha256,
        }
