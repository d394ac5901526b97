"""onnxruntime sessions: provider choice, thread settings and clear errors (no torch)."""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager

import numpy as np

from ...errors import UsageError, setting


@contextmanager
def _torch_hidden():
    """onnxruntime-training's `import onnxruntime` tries `onnxruntime.training.ortmodule`, which imports
    torch where it is installed (seconds, and the runtime must not need it); hide torch meanwhile."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        del sys.modules["torch"]


def ort():
    try:
        with _torch_hidden():
            import onnxruntime
    except ImportError:
        raise UsageError(
            "the step-graph backend needs onnxruntime: pip install 'dgn-engine[cpu]' (or 'dgn-engine[gpu]' for CUDA)"
        ) from None
    return onnxruntime


def providers(device: str, precision: str = "float32") -> tuple[list, str]:
    """(providers for InferenceSession, OrtValue device type) for --device auto|cuda|cpu. onnxruntime's
    CUDA provider computes in TF32 unless told otherwise: float32 must say so."""
    available = ort().get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise UsageError(
            f"{setting('device', 'cuda')}: this onnxruntime has no CUDA provider; pip uninstall onnxruntime "
            f"&& pip install 'dgn-engine[gpu]' (onnxruntime-gpu), or use {setting('device', 'cpu')}"
        )
    if device == "auto" and "CUDAExecutionProvider" in available and not cuda_driver():
        return ["CPUExecutionProvider"], "cpu"  # onnxruntime-gpu on a machine without a GPU: quietly the CPU
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        options = {"use_tf32": "1" if precision == "tf32" else "0"}
        return [("CUDAExecutionProvider", options), "CPUExecutionProvider"], "cuda"
    return ["CPUExecutionProvider"], "cpu"


def cuda_driver() -> bool:
    """Whether the NVIDIA driver's library loads. Without it onnxruntime's CUDA provider fails, after
    printing its errors, and --device auto would fall back to the CPU only then."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def provider_names(provider_list: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in provider_list]


# Above this much of constants, onnxruntime's CPU kernels do not keep their own repacked copy of each
# weight: measured on VGG-16 + the paper's G (530 MB), the step's peak memory falls from 1.75 to 1.29 GB
# at the same speed; on the 32 px demo (2.5 MB) prepacking is worth 4-5 % of the step.
PREPACK_LIMIT = 64 << 20


def session(
    path: str,
    provider_list: list,
    threads: int | None = None,
    profile_prefix: str | None = None,
    weights_bytes: int = 0,
):
    rt = ort()
    so = rt.SessionOptions()
    if weights_bytes > PREPACK_LIMIT:
        so.add_session_config_entry("session.disable_prepacking", "1")
    if profile_prefix:  # onnxruntime's own profiler: a JSON trace of every node's time
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if "CUDAExecutionProvider" in provider_names(provider_list) and hasattr(rt, "preload_dlls"):
        try:
            rt.preload_dlls()
        except Exception:  # the libraries may already be on the loader path
            pass
    try:
        return rt.InferenceSession(path, so, providers=provider_list)
    except Exception as e:  # onnxruntime raises its own exception types
        raise UsageError(f"onnxruntime cannot load {path!r}: {str(e).splitlines()[0][:200]}") from None


def check_io(sess, entry: dict, path: str) -> None:
    """The graph's own inputs and outputs (names and static shapes) are those its manifest records: a
    manifest edited to another batch or layout is refused before the first step, not failed inside it."""
    for kind, ours in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
        got = [(v.name, list(v.shape)) for v in ours]
        recorded = [(v.get("name"), v.get("shape")) for v in entry[kind]]
        if got != recorded:
            wrong = next((g, r) for g, r in zip(got + [None] * len(recorded), recorded + [None] * len(got)) if g != r)
            raise UsageError(
                f"the graph {path!r} has {kind} {wrong[0]}, its manifest records {wrong[1]}: the manifest was "
                "changed; export the artifacts again"
            )


def pad_rows(rows: np.ndarray, k: int) -> np.ndarray:
    """A short batch padded with zero rows to the graphs' static batch k."""
    if len(rows) == k:
        return rows
    return np.concatenate([rows, np.zeros((k - len(rows), *rows.shape[1:]), rows.dtype)])


def classify_in_batches(classifier, images: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """classifier.onnx (static batch k) on any number of model-space images, in float64."""
    names = [o.name for o in classifier.get_outputs()]
    results = {n: [] for n in names}
    for i in range(0, len(images), k):
        chunk = images[i : i + k]
        outs = classifier.run(None, {"image": pad_rows(chunk.astype(np.float32), k)})
        for n, o in zip(names, outs):
            results[n].append(o[: len(chunk)].astype(np.float64))
    return {n: np.concatenate(v) for n, v in results.items()}
