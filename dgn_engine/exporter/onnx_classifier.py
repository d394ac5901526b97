"""D given as an ONNX file: converted to a torch graph by onnx2fx, its input format read from the
graph, and every float tensor the graph computes tappable by its ONNX name.

The file's input tells the layout (NCHW, or NHWC when the last axis holds 1 or 3 channels), the
channel count and, where static, the image size; a batch axis fixed to 1 is run image by image.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import UsageError
from .op_origin import Recorder, forward_op

_FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_NO_TAP_OPS = {"Constant", "ConstantOfShape", "Shape", "Size"}


class OnnxClassifier(nn.Module):
    """The converted graph with an identity submodule after each tappable tensor (hooks read it)."""

    def __init__(
        self, graph: nn.Module, channels_last: bool, one_at_a_time: bool, origins: dict[str, tuple[str, str]] = None
    ):
        super().__init__()
        self.graph, self.channels_last, self.one_at_a_time = graph, channels_last, one_at_a_time
        self.origins = origins or {}  # torch node name -> (ONNX node name, op type) of the node that computes it

    def run_labelled(self, x: torch.Tensor, stack: list) -> torch.Tensor:
        """The graph on `x` (its first image where the file takes one at a time), with stack[-1] the
        (ONNX node name, op type) whose torch translation runs, None between nodes."""
        labels, label = {}, None
        for node in reversed(self.graph.graph.nodes):  # a node's helper nodes come before it, untagged
            if "onnx_op_type" in node.meta:
                label = self.origins.get(node.name) or (
                    node.meta.get("onnx_name") or node.name,
                    node.meta["onnx_op_type"],
                )
            labels[node] = label

        class Labelled(torch.fx.Interpreter):
            def run_node(self, node):
                stack.append(labels.get(node))
                try:
                    return super().run_node(node)
                finally:
                    stack.pop()

        x = x.permute(0, 2, 3, 1) if self.channels_last else x
        return Labelled(self.graph).run(x[:1] if self.one_at_a_time else x)

    def layer_calling(self, example: torch.Tensor, op: str) -> tuple[str, str] | None:
        """(ONNX node name, its op type) of the node whose torch translation calls `op` (or the op
        whose backward `op` is); None where none does."""
        stack, found = [None], {}
        try:
            with torch.no_grad(), Recorder(stack, found):
                self.run_labelled(example, stack)
        except Exception:  # the failure being reported is the export's; this lookup only adds detail
            return None
        return found.get(forward_op(op))

    def forward(self, x):
        if self.channels_last:  # the file's own layout: G makes [batch, channels, height, width]
            x = x.permute(0, 2, 3, 1)
        if self.one_at_a_time and x.shape[0] > 1:
            return torch.cat([self.graph(x[i : i + 1]) for i in range(x.shape[0])])
        return self.graph(x)


def _dims(value) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


@dataclass
class OnnxInput:
    """What an ONNX file says of its input: size None where it leaves the image size open."""

    model: object
    size: int | None
    channels: int
    channels_last: bool
    one_at_a_time: bool  # the batch axis is fixed to 1


def read_onnx(path: str) -> OnnxInput:
    import onnx

    try:
        model = onnx.load(path)
    except Exception as e:
        raise UsageError(
            f"classifier file {path!r} is not an ONNX model (truncated?): {str(e).splitlines()[0][:160]}"
        ) from None
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UsageError(
            f"ONNX file {path!r} takes {len(inputs)} inputs ({names}); D must take one image "
            "batch: re-export it with the other inputs fixed as constants"
        )
    if len(model.graph.output) != 1:
        names = ", ".join(o.name for o in model.graph.output)
        raise UsageError(
            f"ONNX file {path!r} has {len(model.graph.output)} outputs ({names}); D must return "
            "one [batch, classes] tensor: re-export it with only the class scores as output"
        )
    dims = _dims(inputs[0])
    if len(dims) != 4:
        raise UsageError(
            f"ONNX file {path!r} takes input {inputs[0].name!r} of shape {dims}; D must take "
            "images [batch, channels, height, width] (or [batch, height, width, channels])"
        )
    channels_last = dims[1] not in (1, 3) and dims[3] in (1, 3)
    batch, channels, height, width = (dims[0], dims[3], dims[1], dims[2]) if channels_last else dims
    if channels not in (1, 3):
        raise UsageError(
            f"ONNX file {path!r} takes images with {channels} channels; dgn-engine makes "
            "1-channel (L) or 3-channel (RGB, BGR) images"
        )
    if isinstance(batch, int) and batch > 1:
        raise UsageError(
            f"ONNX file {path!r} fixes its batch to {batch} images; re-export it with a "
            "dynamic batch axis (or a batch of 1)"
        )
    size = None
    if isinstance(height, int) and isinstance(width, int) and height > 0:
        if height != width:
            raise UsageError(f"ONNX file {path!r} takes {height}x{width} images; dgn-engine makes square ones")
        size = height
    return OnnxInput(model, size, channels, channels_last, batch == 1)


def _tappable(model) -> list[str]:
    """Names of the float tensors of rank >= 2 the graph computes (rank unknown counts as tappable)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference is a convenience here: without it every computed tensor is offered
        inferred = model.graph
    kinds = {v.name: v.type.tensor_type for v in list(inferred.value_info) + list(inferred.output)}
    names = []
    for node in model.graph.node:
        if node.op_type in _NO_TAP_OPS:
            continue
        for out in node.output:
            kind = kinds.get(out)
            if not out or (kind is not None and kind.elem_type not in _FLOAT_TYPES):
                continue
            if kind is None or not kind.HasField("shape") or len(kind.shape.dim) >= 2:
                names.append(out)
    return names


def convert_onnx(given: OnnxInput, path: str) -> tuple[OnnxClassifier, dict[str, nn.Module]]:
    """The file as a torch module, and {ONNX tensor name: the identity module after it}."""
    try:
        import onnx2fx
        from onnx2fx.graph_builder import GraphBuilder
    except ImportError:
        if importlib.util.find_spec("onnxruntime.training") is not None:
            raise UsageError(
                "an ONNX file as D cannot be converted in the onnxruntime-training environment "
                "(onnx2fx needs onnx >= 1.19.1, onnxruntime-training 1.19 onnx 1.17): export it for "
                "the step-graph backend in the main environment, or give D as a TorchScript "
                "archive or a module"
            ) from None
        raise UsageError(
            "an ONNX file as D needs onnx2fx (Python 3.11 or later): pip install 'dgn-engine[export,onnx-classifier]'"
        ) from None

    model = given.model
    builder = GraphBuilder(model)
    try:
        graph = builder.build()
    except onnx2fx.UnsupportedOpError as e:
        raise UsageError(
            f"ONNX file {path!r}: {str(e).splitlines()[0]}; onnx2fx cannot convert it to torch, "
            "so D's gradient cannot be taken: give D as a torch module or TorchScript file"
        ) from None
    except onnx2fx.Onnx2FxError as e:
        raise UsageError(
            f"ONNX file {path!r} cannot be converted to torch by onnx2fx: {str(e).splitlines()[0][:200]}"
        ) from None
    # an Identity's output is its input's torch node, whose tags the Identity overwrote: the first ONNX
    # node whose output a torch node is, is the one that computes it
    origins = {}
    for onnx_node in model.graph.node:
        for out in onnx_node.output:
            node = builder.env.get(out)
            if isinstance(node, torch.fx.Node):
                origins.setdefault(node.name, (onnx_node.name or out, onnx_node.op_type))
    taps = {}
    for i, name in enumerate(_tappable(model)):
        node = builder.env.get(name)
        if node is None or node.graph is not graph.graph:
            continue
        module_name = f"tap_{i}"
        graph.add_submodule(module_name, nn.Identity())
        with graph.graph.inserting_after(node):
            tap = graph.graph.call_module(module_name, (node,))
        node.replace_all_uses_with(tap, delete_user_cb=lambda user, tap=tap: user is not tap)
        taps[name] = graph.get_submodule(module_name)
    graph.recompile()
    return OnnxClassifier(graph, given.channels_last, given.one_at_a_time, origins), taps
