"""onnxruntime sessions: provider choice, thread settings and clear errors (no torch)."""
from __future__ import annotations

import os

from ...errors import UsageError


def ort():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("the step-graph backend needs onnxruntime: pip install 'dgn-engine[cpu]' "
                         "(or 'dgn-engine[gpu]' for CUDA)") from None
    return onnxruntime


def providers(device: str) -> tuple[list, str]:
    """(providers for InferenceSession, OrtValue device type) for --device auto|cuda|cpu."""
    available = ort().get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise UsageError("--device cuda: this onnxruntime has no CUDA provider; pip uninstall onnxruntime "
                         "&& pip install 'dgn-engine[gpu]' (onnxruntime-gpu), or use --device cpu")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    return ["CPUExecutionProvider"], "cpu"


def session(path: str, provider_list: list, threads: int | None = None):
    rt = ort()
    so = rt.SessionOptions()
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if "CUDAExecutionProvider" in provider_list and hasattr(rt, "preload_dlls"):
        try:
            rt.preload_dlls()
        except Exception:  # the libraries may already be on the loader path
            pass
    try:
        return rt.InferenceSession(path, so, providers=provider_list)
    except Exception as e:  # onnxruntime raises its own exception types
        raise UsageError(f"onnxruntime cannot load {path!r}: {str(e).splitlines()[0][:200]}") from None
