"""Tracing a torch function into a standard-ONNX graph: make_fx (core ATen decompositions plus ours for
the two backward ops that ONNX lacks), then torch.onnx's dynamo exporter; an op it cannot write becomes
one line naming D's layer that uses it."""

from __future__ import annotations

import logging
import re
import warnings

import onnx
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ..kernels.decompositions import decomposition_table
from .coupled import CoupledStep
from .graph_rewrites import (
    bound_masks_as_convolutions,
    channel_scales_into_convolutions,
    clip_masks_read_outputs,
    crops_into_convolutions,
    linear_weights_shared,
    masks_as_products,
)
from .op_origin import forward_op, layer_calling

OPSET = 20


class UntranslatableOp(Exception):
    """An ATen op of the traced step that torch.onnx cannot write as ONNX."""

    def __init__(self, op: str, detail: str):
        super().__init__(op)
        self.op, self.detail = op, detail


_MISSING = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)")


def trace_onnx(fn, args: list[torch.Tensor], inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    # Shapes are static, so a size a traced TorchScript archive turns into a tensor and back (int(...))
    # is a constant here: let make_fx read it instead of refusing it as data-dependent.
    gm = make_fx(fn, decomposition_table=decomposition_table(), _error_on_data_dependent_ops=False)(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                gm.eval(),
                tuple(args),
                dynamo=True,
                opset_version=OPSET,
                input_names=inputs,
                output_names=outputs,
                verbose=False,
                optimize=True,
            )
        except torch.onnx.OnnxExporterError as e:
            missing = _MISSING.search(str(e))
            summary = next(
                (line for line in str(e).splitlines() if "Error" in line and ":" in line), str(e).splitlines()[0]
            )
            raise UntranslatableOp(".".join(missing.groups()) if missing else "", summary[:200]) from None
    model = linear_weights_shared(program.model_proto)
    model = crops_into_convolutions(clip_masks_read_outputs(masks_as_products(model)))
    model = bound_masks_as_convolutions(channel_scales_into_convolutions(model))
    bad = {n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    if bad:
        raise RuntimeError(f"exported graph uses non-standard ONNX domains: {sorted(bad)}")
    return model


def untranslatable(coupled: CoupledStep, image: torch.Tensor, e: UntranslatableOp) -> str:
    if not e.op:
        return f"the step of classifier {coupled.classifier.name!r} cannot be written as ONNX: {e.detail}"
    where = layer_calling(coupled.classifier.module, image, e.op)
    role = "the gradient of " if forward_op(e.op) != e.op.rsplit(".", 1)[0] else ""
    layer = f"D's layer {where[0]!r} ({where[1]})" if where else f"classifier {coupled.classifier.name!r}"
    return (
        f"{layer} uses {forward_op(e.op)}, and {role}that op has no ONNX translation in dgn-engine or "
        f"torch {torch.__version__}; write that layer with other operations (or leave it out of D), or report "
        f"the op to dgn-engine"
    )
