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
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
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
