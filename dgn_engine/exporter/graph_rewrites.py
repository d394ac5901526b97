"""Rewrites of an exported ONNX graph that change how onnxruntime stores or runs it, never the values it
computes (on finite inputs)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    ranks = {i.name: len(i.dims) for i in graph.initializer}
    for v in [*graph.value_info, *graph.input, *graph.output]:
        if v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    return ranks


def _readers(graph: onnx.GraphProto) -> defaultdict:
    """Each tensor's name -> the nodes that read it."""
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    return readers


def _reverses_two_axes(node: onnx.NodeProto) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return perm in (None, [1, 0])


def linear_weights_shared(model: onnx.ModelProto) -> onnx.ModelProto:
    """MatMul(A, Transpose(W)), W a 2-d initializer and A 2-d, becomes Gemm(A, W, transB=1).

    A linear layer's weight is stored once, transposed for its forward Gemm; its input gradient reads
    it transposed back. onnxruntime folds that Transpose of a constant into a second copy of the
    weight at load (VGG-16's fc6: 411 MB more), where Gemm reads the one copy as it is."""
    graph = model.graph
    weights = {i.name for i in graph.initializer if len(i.dims) == 2}
    ranks = _ranks(graph)
    readers = _readers(graph)
    outputs = {v.name for v in graph.output}
    dropped = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "Transpose" or node.input[0] not in weights or not _reverses_two_axes(node):
            continue
        out = node.output[0]
        users = readers[out]
        if out in outputs or not users or not all(_reads_as_b(u, out, ranks) for u in users):
            continue
        for u in users:
            gemm = helper.make_node("Gemm", [u.input[0], node.input[0]], list(u.output), name=u.name, transB=1)
            gemm.metadata_props.extend(u.metadata_props)  # the torch op it came from, which bench --cost reads
            u.CopyFrom(gemm)
        dropped.add(index)
    if dropped:
        kept = [n for i, n in enumerate(graph.node) if i not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
    return model


def _reads_as_b(node: onnx.NodeProto, name: str, ranks: dict[str, int]) -> bool:
    """node is MatMul(A, name) with A 2-d and not name itself."""
    a = node.input[0]
    return node.op_type == "MatMul" and node.input[1] == name and a != name and ranks.get(a) == 2


def masks_as_products(model: onnx.ModelProto) -> onnx.ModelProto:
    """Where(c, 0, x) becomes x * Cast(Not(c)), and Where(c, x, 0) becomes x * Cast(c), the 0 a scalar constant.

    Clip's and ReLU's gradients are written as such a Where; onnxruntime's CPU Where broadcasts the scalar
    element by element, 6-9x the time of a Cast and a Mul (EfficientNet-Lite1's step at K 4: 10 % of it).
    The products are equal wherever x is finite; an infinite or NaN x under the mask gives NaN, not 0."""
    graph = model.graph
    zeros = {i.name: i.data_type for i in graph.initializer if not i.dims and _is_zero(numpy_helper.to_array(i))}
    rewritten, changed = [], False
    for node in graph.node:
        if node.op_type != "Where" or not ({node.input[1], node.input[2]} & zeros.keys()):
            rewritten.append(node)
            continue
        changed = True
        cond, if_true, if_false = node.input
        out = node.output[0]
        added = []
        if if_false in zeros:
            keep, value, zero = cond, if_true, if_false
        else:
            keep, value, zero = f"{out}.keep", if_false, if_true
            added.append(helper.make_node("Not", [cond], [keep], name=f"{node.name}.not"))
        added.append(helper.make_node("Cast", [keep], [f"{out}.mask"], name=f"{node.name}.mask", to=zeros[zero]))
        added.append(helper.make_node("Mul", [value, f"{out}.mask"], [out], name=node.name))
        for new in added:  # the torch op they came from, which bench --cost reads
            new.metadata_props.extend(node.metadata_props)
        rewritten.extend(added)
    if changed:
        del graph.node[:]
        graph.node.extend(rewritten)
    return model


def _is_zero(scalar: np.ndarray) -> bool:
    return scalar.dtype.kind == "f" and scalar.item() == 0


def crops_into_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A Pad that only crops the spatial borders of a Conv's or ConvTranspose's output, which reads
    nothing else, becomes that convolution's own padding: Conv pads less, ConvTranspose crops more.

    The gradient of an explicit padding layer (F.pad, ZeroPad2d; TF-style "same" convolutions) is such
    a crop; onnxruntime copies the whole tensor for it (EfficientNet-Lite1's pixel step: 5 % of it),
    where the convolution can leave those borders out."""
    graph = model.graph
    ints = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT64}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    outputs = {v.name for v in graph.output}
    kept, gone = [], set()
    for node in graph.node:
        conv = producer.get(node.input[0]) if node.op_type == "Pad" else None
        crop = _spatial_crop(node, ints) if conv is not None else None
        if crop is None or len(readers[node.input[0]]) != 1 or node.input[0] in outputs or not _fold_crop(conv, crop):
            kept.append(node)
            continue
        gone.add(conv.output[0])
        conv.output[0] = node.output[0]
        producer[node.output[0]] = conv  # a second crop after this one folds in too
    if gone:
        del graph.node[:]
        graph.node.extend(kept)
        shapes = [v for v in graph.value_info if v.name not in gone]
        del graph.value_info[:]
        graph.value_info.extend(shapes)
    return model


def _spatial_crop(pad: onnx.NodeProto, ints: dict) -> list[int] | None:
    """The (begin..., end...) crop of the spatial axes of a constant Pad that removes rows only, else None."""
    mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
    pads = ints.get(pad.input[1]) if len(pad.input) > 1 else None
    if mode != "constant" or (len(pad.input) > 3 and pad.input[3]) or pads is None or pads.ndim != 1:
        return None
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or begin[:2].any() or end[:2].any() or (pads > 0).any():
        return None
    return [int(-v) for v in (*begin[2:], *end[2:])]


def _fold_crop(conv: onnx.NodeProto, crop: list[int]) -> bool:
    """Fold a crop into the node's pads attribute where it can take it exactly."""
    attrs = {a.name: a for a in conv.attribute}
    auto_pad = attrs["auto_pad"].s if "auto_pad" in attrs else b"NOTSET"
    if conv.op_type not in ("Conv", "ConvTranspose") or auto_pad not in (b"", b"NOTSET"):
        return False
    extra = attrs["output_padding"].ints if "output_padding" in attrs else ()
    if conv.op_type == "ConvTranspose" and ("output_shape" in attrs or any(extra)):
        return False
    pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * len(crop)
    if len(pads) != len(crop):
        return False
    if conv.op_type == "Conv":  # each output row left out is `stride` rows less padding
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * (len(crop) // 2)
        folded = [p - c * s for p, c, s in zip(pads, crop, strides * 2)]
    else:  # ConvTranspose's pads crop its output
        folded = [p + c for p, c in zip(pads, crop)]
    if min(folded) < 0:
        return False
    if "pads" in attrs:
        conv.attribute.remove(attrs["pads"])
    conv.attribute.append(helper.make_attribute("pads", folded))
    return True


# x compared with Clip(x, lo, hi)'s bound: the same answer from the Clip's output (lo < hi, NaN false in both)
_SAME_ON_CLIPPED = {"LessOrEqual": "lo", "Greater": "lo", "GreaterOrEqual": "hi", "Less": "hi"}


def clip_masks_read_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """x <= lo, x > lo, x >= hi and x < hi, where Clip(x, lo, hi) is in the graph, read the Clip's output.

    Clip's gradient (ReLU6's: MobileNets, EfficientNet-Lite) compares Clip's input with its bounds, so
    the Conv before it has two readers and onnxruntime cannot fuse the Clip into it: an extra pass over
    the activation, and a layout reorder before the next Conv. Compared on the output, the answers are
    the same (clip(x) <= lo exactly where x <= lo, as lo < hi) and the input has one reader."""
    graph = model.graph
    scalars = {i.name: numpy_helper.to_array(i) for i in graph.initializer if not i.dims}
    bounds = {}  # a Clip's input -> (its output, lo, hi)
    for node in graph.node:
        if node.op_type == "Clip" and len(node.input) == 3 and all(b in scalars for b in node.input[1:]):
            lo, hi = (float(scalars[b]) for b in node.input[1:])
            if lo < hi:
                bounds.setdefault(node.input[0], (node.output[0], lo, hi))
    for node in graph.node:
        side = _SAME_ON_CLIPPED.get(node.op_type)
        if side is None or node.input[0] not in bounds or node.input[1] not in scalars:
            continue
        clipped, lo, hi = bounds[node.input[0]]
        if float(scalars[node.input[1]]) == (lo if side == "lo" else hi):
            node.input[0] = clipped
    return model


def channel_scales_into_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Conv(x * s, W), s a constant per channel [1, C, 1, ...] and W constant, becomes Conv(x, W * s):
    the scale moves onto the kernel, which onnxruntime folds once at load.

    A BatchNorm's gradient in eval mode is such a scale, and the convolution before it in the forward
    pass reads the result in the backward one (EfficientNet-Lite1's pixel step: 59 of them, each a pass
    over an activation). Group 1 (s over W's input channels) and depthwise (s over its output channels)
    are rewritten; the products agree to float32 rounding."""
    graph = model.graph
    constant = _constant_names(graph)
    dims = _dims(graph)
    readers = _readers(graph)
    outputs = {v.name for v in graph.output}
    before: dict[int, list] = defaultdict(list)  # id(conv) -> nodes to insert ahead of it
    dropped = set()
    for index, node in enumerate(graph.node):
        scaled = _scaled_convolution(node, constant, dims, readers, outputs)
        if scaled is None:
            continue
        conv, x, s, depthwise = scaled
        tag = f"{node.name or node.output[0]}.onto_kernel"
        if depthwise:  # s over the output channels of a [C, 1, k...] kernel
            shape = f"{tag}.shape"
            ones = np.array([-1] + [1] * (len(dims[s]) - 1), np.int64)
            graph.initializer.append(numpy_helper.from_array(ones, shape))
            before[id(conv)].append(helper.make_node("Reshape", [s, shape], [f"{tag}.s"], name=f"{tag}.reshape"))
            s = f"{tag}.s"
        before[id(conv)].append(helper.make_node("Mul", [conv.input[1], s], [f"{tag}.w"], name=tag))
        for new_node in before[id(conv)][-2 if depthwise else -1 :]:  # the torch op, which bench --cost reads
            new_node.metadata_props.extend(node.metadata_props)
        conv.input[0], conv.input[1] = x, f"{tag}.w"
        dropped.add(index)
    if dropped:
        kept = []
        for index, node in enumerate(graph.node):
            if index not in dropped:
                kept.extend(before.get(id(node), []))
                kept.append(node)
        del graph.node[:]
        graph.node.extend(kept)
    return model


def _scaled_convolution(node, constant, dims, readers, outputs):
    """(the Conv, x, s, whether depthwise) where node is x * s read only by that Conv as its input."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    x, s = node.input if node.input[1] in constant else reversed(node.input)
    out, users = node.output[0], readers[node.output[0]]
    if x in constant or s not in constant or out in outputs or len(users) != 1:
        return None
    conv = users[0]
    if conv.op_type != "Conv" or conv.input[0] != out or len(conv.input) < 2 or conv.input[1] not in constant:
        return None
    sd, wd = dims.get(s), dims.get(conv.input[1])
    if sd is None or wd is None or len(sd) != len(wd) or sd[0] != 1 or any(d != 1 for d in sd[2:]):
        return None
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group == 1 and wd[1] == sd[1]:
        return conv, x, s, False
    if group == sd[1] == wd[0] and wd[1] == 1:
        return conv, x, s, True
    return None


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    """Initializers and what nodes compute from them alone (onnxruntime folds those at load)."""
    constant = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.input and all(not i or i in constant for i in node.input):
            constant.update(node.output)
        elif node.op_type == "Constant":
            constant.update(node.output)
    return constant


def _dims(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Each tensor's static shape, where the graph records one."""
    dims = {i.name: list(i.dims) for i in graph.initializer}
    for v in [*graph.value_info, *graph.input, *graph.output]:
        shape = v.type.tensor_type.shape if v.type.tensor_type.HasField("shape") else None
        if shape is not None and all(d.HasField("dim_value") for d in shape.dim):
            dims[v.name] = [d.dim_value for d in shape.dim]
    return dims


# onnxruntime's CPU blocked layout (NCHWc) takes a depthwise convolution whose channels fill its blocks
# (8 or 16 floats, by the CPU's vector width): multiples of 16 fill both.
_BLOCKED_CHANNELS = 16


def bound_masks_as_convolutions(model: onnx.ModelProto) -> onnx.ModelProto:
    """A mask Cast(Not(y <= lo)) or Cast(Not(Or(y <= lo, y >= hi))), y [N, C, H, W] with C a multiple of 16
    (a ReLU's or a Clip's gradient compares its output so), becomes clip(K (y - lo), 0, 1) * clip(K (hi - y),
    0, 1): 1x1 depthwise convolutions with the clip fused into them, K a power of two.

    onnxruntime's CPU runs convolutions in a blocked layout (NCHWc) that products can stay in, but not
    comparisons: each activation a mask compared left that layout, and so did each masked gradient, to
    come back for the next convolution (EfficientNet-Lite1's pixel step: 3 reorders per ReLU6, 14 % of
    it). K y is exact (a power of two; K max(|lo|, |hi|) <= 2^126, so K (y - lo) and K (hi - y) stay
    finite for y between the bounds, and past them an overflow to infinity is still on the right side)
    and the bias adds one rounding, which cannot cross 0 or 1: the mask is the comparisons' 0 or 1
    wherever y is a bound or at least 1/K from it. Within 1/K above a zero bound (2^-123 for ReLU6; for
    ReLU, float32's denormals) it is K y, a fraction. A NaN y gives NaN, not 1."""
    graph = model.graph
    real = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
    scalars = {i.name: float(numpy_helper.to_array(i)) for i in graph.initializer if not i.dims and i.data_type in real}
    dims = _dims(graph)
    floats = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    readers = _readers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {v.name for v in graph.output}
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    for node in graph.node:
        cast = _sole_reader(node, readers, outputs) if node.op_type == "Not" else None
        if cast is None or cast.op_type != "Cast":
            continue
        found = _compared_bounds(producer.get(node.input[0]), producer, readers, outputs, scalars)
        if found is None:
            continue
        y, lo, hi, compares = found
        shape = dims.get(y)
        if not np.isfinite([lo, 0.0 if hi is None else hi]).all():
            continue
        if y not in floats or shape is None or len(shape) != 4 or shape[1] % _BLOCKED_CHANNELS:
            continue
        if next(a.i for a in cast.attribute if a.name == "to") != onnx.TensorProto.FLOAT:
            continue
        sides = [(1.0, -lo)] + ([(-1.0, hi)] if hi is not None else [])
        magnitude = max(abs(lo), abs(hi) if hi is not None else 0.0, 1.0)
        scale = 2.0 ** (126 - int(np.ceil(np.log2(magnitude))))
        added = _clipped_ramps(graph, y, shape[1], scale, sides, cast.output[0])
        for new in added:  # the torch op they came from, which bench --cost reads
            new.metadata_props.extend(cast.metadata_props)
        replaced[id(cast)] = added
        dropped.update(id(n) for n in (*compares, node))
    if replaced:
        kept = []
        for node in graph.node:
            if id(node) in replaced:
                kept.extend(replaced[id(node)])
            elif id(node) not in dropped:
                kept.append(node)
        del graph.node[:]
        graph.node.extend(kept)
    return model


def _sole_reader(node, readers, outputs):
    """The one node that reads node's output, where nothing else does (the graph's outputs included)."""
    users = readers[node.output[0]]
    return users[0] if len(users) == 1 and node.output[0] not in outputs else None


def _compared_bounds(node, producer, readers, outputs, scalars):
    """(y, lo, hi or None, the comparison nodes) where node is y <= lo, or Or(y <= lo, y >= hi), each
    comparison read by nothing else."""
    if node is None or _sole_reader(node, readers, outputs) is None:
        return None
    if node.op_type == "LessOrEqual" and node.input[1] in scalars:
        return node.input[0], scalars[node.input[1]], None, [node]
    if node.op_type != "Or":
        return None
    parts = [producer.get(name) for name in node.input]
    if any(p is None or _sole_reader(p, readers, outputs) is None for p in parts):
        return None
    ops = {p.op_type: p for p in parts}
    le, ge = ops.get("LessOrEqual"), ops.get("GreaterOrEqual")
    if le is None or ge is None or le.input[0] != ge.input[0] or not {le.input[1], ge.input[1]} <= scalars.keys():
        return None
    return le.input[0], scalars[le.input[1]], scalars[ge.input[1]], [le, ge, node]


def _clipped_ramps(graph, y: str, channels: int, scale: float, sides, out: str) -> list:
    """Nodes computing out = prod over sides (sign, offset) of clip(scale (sign y + offset), 0, 1)."""
    zero, one = f"{out}.zero", f"{out}.one"
    graph.initializer.extend(numpy_helper.from_array(np.float32(v), name) for v, name in ((0, zero), (1, one)))
    nodes, ramps = [], []
    for i, (sign, offset) in enumerate(sides):
        w, b, ramp = f"{out}.w{i}", f"{out}.b{i}", f"{out}.ramp{i}" if len(sides) > 1 else out
        graph.initializer.extend([
            numpy_helper.from_array(np.full((channels, 1, 1, 1), sign * scale, np.float32), w),
            numpy_helper.from_array(np.full(channels, offset * scale, np.float32), b),
        ])  # fmt: skip
        nodes.append(helper.make_node("Conv", [y, w, b], [f"{ramp}.linear"], name=f"{out}.conv{i}", group=channels))
        nodes.append(helper.make_node("Clip", [f"{ramp}.linear", zero, one], [ramp], name=f"{out}.clip{i}"))
        ramps.append(ramp)
    if len(ramps) > 1:
        nodes.append(helper.make_node("Mul", ramps, [out], name=f"{out}.both"))
    return nodes
