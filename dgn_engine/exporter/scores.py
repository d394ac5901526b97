"""D's final normalisation: the Softmax, LogSoftmax or Sigmoid a classifier applies to its class scores.

The paper replaces D's softmax so that the search drives the scores, not probabilities that saturate
at 1 within a few steps. Many files carry that softmax inside (Keras models exported to ONNX almost
always do). It is found on one probe image: the normalisation call whose output D returns (itself or
a view of it: a Reshape, Flatten or Identity after it), over the class axis. At run time that call
returns its input, above autograd, so the step, its gradient and every trace see the scores.

Calls are seen as torch functions (a TorchFunctionMode): `nn.Softmax`, `F.softmax`, tensor methods and
the ATen ops that an interpreted TorchScript archive or a converted ONNX graph calls all arrive here.
A compiled archive that cannot be interpreted runs its ops unseen: its output is then optimised as it
is, with a warning where it looks like a probability.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import rendered, setting

_aten = torch.ops.aten
OPS = {
    **dict.fromkeys(
        (F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax, _aten.softmax.int),
        "Softmax",
    ),
    _aten._softmax.default: "Softmax",
    **dict.fromkeys(
        (F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax, torch.special.log_softmax, _aten.log_softmax.int),
        "LogSoftmax",
    ),
    _aten._log_softmax.default: "LogSoftmax",
    **dict.fromkeys(
        (torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.special.expit, _aten.sigmoid.default), "Sigmoid"
    ),
}
PROBABILITY = {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}  # what the scores give


@dataclass(frozen=True)
class FinalNormalisation:
    op: str  # Softmax | LogSoftmax | Sigmoid
    node: str  # where D applies it: an ONNX node, a submodule, or D's own forward
    index: int  # which of the normalisation calls that one image's forward makes
    period: int  # how many it makes (they repeat per image where D runs images one at a time)

    @property
    def probability(self) -> str:
        return PROBABILITY[self.op]

    def describe(self) -> str:
        return f"D's final {self.op} ({self.node})"


def _dim(func, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None:  # softmax's implicit dim (deprecated in torch, still accepted)
        dim = 0 if args[0].dim() in (0, 1, 3) else 1
    return dim


class _Calls(TorchFunctionMode):
    """Every normalisation call, in order: (op, the label on `stack`, its input's shape, dim, output)."""

    def __init__(self, stack: list):
        super().__init__()
        self.stack, self.calls = stack, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = OPS.get(func)
        if op is not None and args and isinstance(args[0], torch.Tensor):
            dim = None if op == "Sigmoid" else _dim(func, args, kwargs)
            self.calls.append((op, self.stack[-1], tuple(args[0].shape), dim, out))
        return out


class _Skipping(TorchFunctionMode):
    """The normalisation call `final.index` (of every `final.period`) returns its input: the scores."""

    def __init__(self, final: FinalNormalisation):
        super().__init__()
        self.final, self.count = final, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in OPS and args and isinstance(args[0], torch.Tensor):
            n, self.count = self.count, self.count + 1
            if n % self.final.period == self.final.index:
                return args[0]
        return func(*args, **(kwargs or {}))


def skipping(final: FinalNormalisation | None):
    """Within: D's final normalisation passes its input through (nothing changes where `final` is None)."""
    return nullcontext() if final is None else _Skipping(final)


def _labelled(module: nn.Module, x: torch.Tensor, stack: list) -> torch.Tensor:
    """module(x) with stack[-1] naming what runs: an ONNX node, a TorchScript submodule, a submodule."""
    if hasattr(module, "run_labelled"):
        return module.run_labelled(x, stack)

    def leave(_module, _inputs, _output):
        stack.pop()  # returns None: the output stays the module's own

    handles = []
    for name, m in module.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name)))
            handles.append(m.register_forward_hook(leave))
    try:
        return module(x)
    finally:
        for h in handles:
            h.remove()


def _same_values_seen(out: torch.Tensor, seen: torch.Tensor) -> bool:
    """`out` is the tensor `seen` or a view of it (same storage, same elements)."""
    return (
        isinstance(seen, torch.Tensor)
        and out.numel() == seen.numel()
        and out.untyped_storage().data_ptr() == seen.untyped_storage().data_ptr()
        and torch.equal(out.reshape(-1), seen.reshape(-1))
    )


def find_final(module: nn.Module, example: torch.Tensor) -> FinalNormalisation | None:
    """D's final normalisation, seen on `example` (one image [1, C, H, W]); None where D's output is
    not one (or the call that makes it runs unseen, in compiled code)."""
    stack = [""]
    with torch.no_grad(), _Calls(stack) as seen:
        out = _labelled(module, example, stack)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    for index in reversed(range(len(seen.calls))):
        op, label, shape, dim, value = seen.calls[index]
        over_classes = op == "Sigmoid" or shape[dim] == out.numel()  # one image: every other axis is 1
        if over_classes and _same_values_seen(out, value):
            name = label[0] if isinstance(label, tuple) else label
            where = name or getattr(module, "forward_name", f"{type(module).__name__}.forward")
            return FinalNormalisation(op, where, index, len(seen.calls))
    return None


def probability(scores: torch.Tensor, kind: str) -> torch.Tensor:
    """What D's final normalisation makes of its scores [N, classes], as probabilities."""
    return torch.softmax(scores, 1) if kind == "softmax" else torch.sigmoid(scores)


SUM_TOLERANCE = 1e-5  # float32 rows of up to ~1,000 probabilities sum to 1 within ~1e-6


def looks_like_probability(out: torch.Tensor) -> bool:
    """Rows of non-negative values summing to 1 (softmax), of log-probabilities (log-softmax), or values
    strictly between 0 and 1 (sigmoid)."""
    out = out.double()
    if out.shape[1] > 1 and (out >= 0).all() and ((out.sum(1) - 1).abs() < SUM_TOLERANCE).all():
        return True
    if out.shape[1] > 1 and (out <= 0).all() and (out.logsumexp(1).abs() < SUM_TOLERANCE).all():
        return True
    return bool(((out > 0) & (out < 1)).all())


def warn_unfound(name: str) -> None:
    """One line: D's output looks like a probability and no normalisation could be taken off it."""
    print(
        "dgn-engine: warning: "
        + rendered(
            f"classifier {name!r} returns what look like probabilities, but no final Softmax, LogSoftmax or "
            "Sigmoid could be found to drive the scores before it, as the paper does; its output is optimised as "
            f"it is and saturates near 1 (return the scores instead, or give {setting('keep_softmax', True)} to "
            "silence this)"
        ),
        file=sys.stderr,
    )
