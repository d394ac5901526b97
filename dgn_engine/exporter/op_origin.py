"""Which layer of D calls an ATen op: so that an op the exporter cannot translate is reported by the
layer a user wrote, not by a line of the exporter."""

from __future__ import annotations

import re

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

_BACKWARD = re.compile(r"(_backward(_data)?|_double_backward)$")


def forward_op(op: str) -> str:
    """'aten.grid_sampler_2d_backward.default' -> 'aten.grid_sampler_2d' (the op whose gradient it is)."""
    name = op.rsplit(".", 1)[0] if op.count(".") >= 2 else op
    return _BACKWARD.sub("", name)


class Recorder(TorchDispatchMode):
    """Records, for each ATen op, the innermost label on `stack` when it first runs."""

    def __init__(self, stack: list[str], found: dict[str, str]):
        super().__init__()
        self.stack, self.found = stack, found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.stack[-1]:
            self.found.setdefault(f"{func.namespace}.{func._opname}", self.stack[-1])
        return func(*args, **(kwargs or {}))


def layer_calling(module: nn.Module, example: torch.Tensor, op: str) -> tuple[str, str] | None:
    """(layer name, its class) of the innermost module whose forward calls `op` (or the op whose
    backward `op` is), running D once on `example`; None where no hooked module calls it. A module
    that knows its ops' origins better than its module tree (an ONNX file's graph) answers itself."""
    if hasattr(module, "layer_calling"):
        return module.layer_calling(example, op)
    stack, found = [""], {}
    handles = []
    modules = dict(module.named_modules())

    def leave(_module, _inputs, _output):
        stack.pop()  # returns None: the output stays the module's own

    for name, m in modules.items():
        if name:
            handles.append(m.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name)))
            handles.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad(), Recorder(stack, found):
            module(example)
    except Exception:  # the failure being reported is the export's; this lookup only adds detail
        return None
    finally:
        for h in handles:
            h.remove()
    layer = found.get(forward_op(op))
    if not layer:
        return None
    return layer, type(modules[layer]).__name__
