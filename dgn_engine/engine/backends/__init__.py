"""The engine's backends, all behind protocol.Backend: over exported artifacts in onnxruntime (no torch) and the
torch reference (torch_reference.py, imported only when asked for)."""


def engine_backend(name: str, art, device: str = "auto", threads: int | None = None, precision: str = "float32"):
    """The backend called `name` (step-graph or training-api) on an artifacts folder."""
    if name == "step-graph":
        from .step_graph import StepGraphBackend

        return StepGraphBackend(art, device, threads, precision)
    from .training_api import TrainingApiBackend

    return TrainingApiBackend(art, device, threads, precision)
