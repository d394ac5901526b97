"""The training-API backend: onnxruntime-training's Module computes the gradients, we update.

`export --backend training-api` writes a training model (G + D + objective, with onnxruntime's own
gradient graph) and a checkpoint of the trainables. Each step runs `train_step`, then applies
AdaMax or Nesterov (dgn_engine.update_rules, in numpy: onnxruntime's training optimisers are only
AdamW and SGD) to every trainable through its parameter's gradient and data. Only the C bindings
are used: the `onnxruntime.training` Python package imports torch. On CUDA the gradients and
parameters cross to the host once per step for the update, and MaxPoolGrad runs on the CPU (it has
no CUDA kernel in 1.19.2).
"""

from __future__ import annotations

import os

import numpy as np

from ...artifacts import Artifacts
from ...errors import UsageError, setting
from ...spec import HYPER, RunSpec
from ...state import SLOTS, initial_state, trainable_shapes
from ...targets import Target, objective_weights
from ...update_rules import adamax, adamax_step_size, nesterov
from .base import ArtifactsBackend
from .onnx_session import ort, pad_rows
from .protocol import StepReadout

INSTALL = (
    "the training-api backend needs onnxruntime-training, which provides its own `onnxruntime`: in a "
    "separate virtual environment, pip install 'dgn-engine[training-api]'"
)


def training_bindings():
    rt = ort()
    from onnxruntime.capi import _pybind_state as C

    if not hasattr(C, "Module"):
        raise UsageError(f"this onnxruntime ({rt.__version__}) has no training API; {INSTALL}")
    return rt, C


class TrainingApiBackend(ArtifactsBackend):
    name = "training-api"

    def __init__(self, art: Artifacts, device: str = "auto", threads: int | None = None, precision: str = "float32"):
        if precision == "tf32":  # its Module takes a device, not provider options
            raise UsageError(
                f"{setting('precision', 'tf32')} is the step-graph backend's; the training-api backend runs float32"
            )
        self.rt, self.C = training_bindings()
        if device == "cuda" and "CUDAExecutionProvider" not in self.rt.get_available_providers():
            raise UsageError(
                f"{setting('device', 'cuda')}: this is onnxruntime-training's CPU build; its CUDA build is "
                "onnxruntime-training==1.19.2 (CUDA 11.8, cuDNN 8, Python 3.10/3.11), or use the "
                "step-graph backend with onnxruntime-gpu"
            )
        self.asked_device = device
        super().__init__(art, device, threads, precision)
        if self.device_type == "cpu":
            self.providers = ["CPUExecutionProvider"]
        self.inputs = self.module.input_names(True)
        self.outputs = self.module.output_names(True)
        self.trainables = list(trainable_shapes(self.mode, self.plan))

    def load(self) -> None:
        # the CUDA build lists CUDA even where CUDA 11.8 / cuDNN 8 cannot start: --device auto falls back
        tries = [self.device_type] + (["cpu"] if self.asked_device == "auto" and self.device_type == "cuda" else [])
        for i, self.device_type in enumerate(tries):
            try:
                self.module = self._module(self.art)
                break
            except Exception as e:  # onnxruntime raises its own exception types
                if i == len(tries) - 1:
                    raise UsageError(
                        f"onnxruntime-training cannot load the artifacts in {self.art.path!r}: "
                        f"{str(e).splitlines()[0][:200]}"
                    ) from None

    def _module(self, art: Artifacts):
        C = self.C
        options = self.rt.SessionOptions()
        options.intra_op_num_threads = self.threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        kind = C.OrtDevice.cuda() if self.device_type == "cuda" else C.OrtDevice.cpu()
        self.checkpoint = C.load_checkpoint(os.path.join(art.path, "checkpoint"))
        # no eval model: the engine never needs one (its BatchNorm handling is the fragile part)
        return C.Module(
            art.graph("training"), self.checkpoint, None, C.OrtDevice(kind, C.OrtDevice.default_memory(), 0), options
        )

    def _set(self, name: str, value: np.ndarray) -> None:
        value = self.rt.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, np.float32))
        self.checkpoint.copy_parameter_from(name, value._ortvalue)

    def start(self, targets: list[Target], spec: RunSpec) -> None:
        padded = self.padded(targets, spec)
        state = initial_state(self.mode, self.plan, spec.optimizer.name, spec.seed, padded)
        for name in self.trainables:
            self._set(name, state.pop(name))
        self.slots = state  # optimiser slots and the step count, on the host
        self.optimizer = spec.optimizer.name
        self.hyper = np.array(spec.hyper(), np.float32)
        self.settings = dict(zip(HYPER, self.hyper))
        weights, penalty = objective_weights(padded, self.layout, spec.lam)
        self.feeds = {f"weight.{n}": np.ascontiguousarray(w, np.float32) for n, w in weights.items()}
        self.feeds.update(penalty=penalty.astype(np.float32), hyper=self.hyper)

    def step(self, noise: np.ndarray, read: bool, image: bool, transform: np.ndarray | None = None) -> StepReadout:
        self.feeds["noise"] = np.ascontiguousarray(pad_rows(noise, self.k), np.float32)
        fetches = self.C.OrtValueVector()
        self.module.lazy_reset_grad()
        self.module.train_step([self.feeds[n] for n in self.inputs], fetches)
        outs = dict(zip(self.outputs, fetches))
        self._update()
        result = StepReadout()
        if read:
            result.loss = outs["loss_per_target"].numpy()[: self.n].copy()
            result.activation = outs["activation"].numpy()[: self.n].copy()
        if image:
            result.image = outs["image"].numpy()[: self.n].copy()
        return result

    def _update(self) -> None:
        """One AdaMax / Nesterov step of every trainable, in float32 as the step graph computes it."""
        h, s = self.settings, self.slots
        s["t"] = s["t"] + np.float32(1)
        if self.optimizer == "adamax":
            step_size = adamax_step_size(s["t"], h["lr"], h["beta1"])
        for name in self.trainables:
            param = self.checkpoint.get_parameter(name)
            g, p = param.grad.numpy(), param.data.numpy()
            if self.optimizer == "adamax":
                new, s[f"m.{name}"], s[f"u.{name}"] = adamax(
                    p, g, s[f"m.{name}"], s[f"u.{name}"], step_size, h["beta1"], h["beta2"], h["eps"], np.maximum
                )
            else:
                new, s[f"v.{name}"] = nesterov(p, g, s[f"v.{name}"], h["lr"], h["momentum"])
            self._set(name, new)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the current state (real rows; verification steps every path from one state)."""
        for name, value in state.items():
            value = np.asarray(value, np.float32) if name == "t" else pad_rows(np.asarray(value, np.float32), self.k)
            if name in self.trainables:
                self._set(name, value)
            else:
                self.slots[name] = value.copy()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The current state on the host (for verification), real rows only except for t."""
        out = {n: self.checkpoint.get_parameter(n).data.numpy()[: self.n].copy() for n in self.trainables}
        out.update({n: (v if n == "t" else v[: self.n]).copy() for n, v in self.slots.items()})
        order = [*self.trainables, *(f"{s}.{n}" for s in SLOTS[self.optimizer] for n in self.trainables), "t"]
        return {n: out[n] for n in order}

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "device": self.device_type,
            "precision": "float32",
            "onnxruntime": self.rt.__version__,
            "artifacts": self.art.path,
            "manifest_sha256": self.art.manifest_sha256,
        }
