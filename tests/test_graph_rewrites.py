"""Graph rewrites change how onnxruntime stores or runs a graph, never the values it computes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.cost import assign_roles
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.exporter.graph_rewrites import (
    bound_masks_as_convolutions,
    channel_scales_into_convolutions,
    clip_masks_read_outputs,
    crops_into_convolutions,
    linear_weights_shared,
    masks_as_products,
)
from dgn_engine.exporter.verify import verify


def _model(a_shape):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["a", "wt"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [*a_shape[:-1], 5])],
        [w],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def _run(model, a):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": a})[0]


def test_a_transposed_weight_read_by_matmul_becomes_gemm_on_the_weight():
    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    before = _model([3, 4])
    expected = _run(before, a)
    after = linear_weights_shared(_model([3, 4]))
    assert [n.op_type for n in after.graph.node] == ["Gemm", "Relu"]
    assert list(after.graph.node[0].input) == ["a", "w"]
    # the same products summed in the same order: equal to float32 rounding
    np.testing.assert_allclose(_run(after, a), expected, rtol=1e-6, atol=1e-6)


def test_a_three_dimensional_input_keeps_its_matmul():
    """Gemm takes 2-d inputs only."""
    after = linear_weights_shared(_model([2, 3, 4]))
    assert [n.op_type for n in after.graph.node] == ["Transpose", "MatMul", "Relu"]


@pytest.mark.slow  # an export of its own
def test_exported_linear_layers_keep_one_copy_of_their_weights(tmp_path):
    """tiny_gray's hidden layer (784 x 32) is over the exporter's folding limit (8,192 elements), so
    its input gradient reads the weight through a Transpose: rewritten, the forward Gemm and the input
    gradient's Gemm read the same initializer, and the step still matches float64."""
    argv = ["export", "--classifier", "tests.small_models:tiny_gray", "--mode", "pixel", "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    art = load_artifacts(str(tmp_path / "a"))
    graph = onnx.load(art.graph("step"), load_external_data=False).graph
    matrices = {i.name for i in graph.initializer if len(i.dims) == 2}
    transposed = {n.output[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in matrices}
    assert not any(n.op_type == "MatMul" and n.input[1] in transposed for n in graph.node)
    roles = dict(zip((n.name for n in graph.node), assign_roles(graph)))
    readers: dict[str, set] = {}
    for n in graph.node:
        if n.op_type == "Gemm" and n.input[1] in matrices:
            readers.setdefault(n.input[1], set()).add(roles[n.name])
    assert any({"forward", "input gradient"} <= r for r in readers.values()), readers
    ok, report = verify(art, 2, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert ok, report


def _masked(zero_first: bool, zero=0.0):
    """out = Where(x > 1, 0, g) (zero_first) or Where(x > 1, g, 0): a ReLU-like gradient mask."""
    branches = ["zero", "g"] if zero_first else ["g", "zero"]
    nodes = [
        helper.make_node("Greater", ["x", "one"], ["c"]),
        helper.make_node("Where", ["c", *branches], ["out"], name="mask_of_x"),
    ]
    vec = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [vec("x", TensorProto.FLOAT, [2, 3, 4]), vec("g", TensorProto.FLOAT, [2, 3, 4])],
        [vec("out", TensorProto.FLOAT, [2, 3, 4])],
        [numpy_helper.from_array(np.float32(1), "one"), numpy_helper.from_array(np.float32(zero), "zero")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run_masked(model):
    rng = np.random.default_rng(2)
    x, g = (rng.standard_normal((2, 3, 4)).astype(np.float32) * 2 for _ in range(2))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "g": g})[0]


@pytest.mark.parametrize("zero_first", [True, False])
def test_a_where_against_a_zero_scalar_becomes_a_product_with_the_mask(zero_first):
    expected = _run_masked(_masked(zero_first))
    after = masks_as_products(_masked(zero_first))
    ops = [n.op_type for n in after.graph.node]
    assert ops == (["Greater", "Not", "Cast", "Mul"] if zero_first else ["Greater", "Cast", "Mul"])
    assert after.graph.node[-1].output[0] == "out"
    # finite values times exactly 1 or 0: bit for bit the same
    np.testing.assert_array_equal(_run_masked(after), expected)
    assert (expected == 0).any() and (expected != 0).any()


def test_a_where_against_another_constant_is_kept():
    after = masks_as_products(_masked(True, zero=0.5))
    assert [n.op_type for n in after.graph.node] == ["Greater", "Where"]


def _clip_and_its_masks(compares):
    """y = Clip(x, 0, 6) and, for each (op, bound), out_i = g * Cast(op(x, bound)): ReLU6 and its gradient."""
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])]
    for i, (op, bound) in enumerate(compares):
        nodes += [
            helper.make_node(op, ["x", bound], [f"c{i}"], name=f"compare{i}"),
            helper.make_node("Cast", [f"c{i}"], [f"m{i}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["g", f"m{i}"], [f"out{i}"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, [64]))
    consts = {"lo": 0.0, "hi": 6.0, "one": 1.0}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64]) for n in ("x", "g")],
        outputs,
        [numpy_helper.from_array(np.float32(v), k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_a_clips_masks_read_its_output_where_the_answer_is_the_same():
    compares = [("LessOrEqual", "lo"), ("Greater", "lo"), ("GreaterOrEqual", "hi"), ("Less", "hi")]
    kept = [("Less", "lo"), ("GreaterOrEqual", "lo"), ("LessOrEqual", "one"), ("Greater", "hi")]
    # the bounds themselves, values a rounding step inside and outside them, NaN and the infinities
    x = np.float32([0, 6, -1e-30, 1e-30, np.nextafter(6, 0), np.nextafter(6, 7), np.nan, np.inf, -np.inf])
    x = np.concatenate([x, np.random.default_rng(4).uniform(-3, 9, 64 - len(x)).astype(np.float32)])
    g = np.random.default_rng(5).standard_normal(64).astype(np.float32)

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x, "g": g})

    expected = run(_clip_and_its_masks(compares + kept))
    after = clip_masks_read_outputs(_clip_and_its_masks(compares + kept))
    reads = {n.name: n.input[0] for n in after.graph.node if n.name.startswith("compare")}
    assert reads == {f"compare{i}": "y" if i < len(compares) else "x" for i in range(len(compares + kept))}
    # the same comparisons' answers: bit for bit the same products
    for got, want in zip(run(after), expected):
        np.testing.assert_array_equal(got, want)


def _cropped(op: str, crop_begin: int, crop_end: int, pads=(1, 1, 1, 1), stride=1, readers=1, twice=False):
    """y = Pad(conv(x), -crop) on H and W, the conv's output read `readers` times; `twice`: a second
    crop of the same size after the first."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3) if op == "Conv" else (3, 4, 3, 3)).astype(np.float32)
    crop = [0, 0, -crop_begin, -crop_begin, 0, 0, -crop_end, -crop_end]
    nodes = [
        helper.make_node(op, ["x", "w"], ["c"], pads=list(pads), strides=[stride, stride]),
        helper.make_node("Pad", ["c", "crop"], ["c2" if twice else "y"], mode="constant"),
    ]
    if twice:
        nodes.append(helper.make_node("Pad", ["c2", "crop"], ["y"], mode="constant"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if readers == 2:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
        outputs,
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(crop, np.int64), "crop")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run_cropped(model):
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 9)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize(
    "op, begin, end, pads, stride",
    [("Conv", 1, 1, (2, 2, 2, 2), 1), ("Conv", 1, 2, (2, 2, 4, 4), 2), ("ConvTranspose", 0, 1, (0, 0, 0, 0), 2)],
)
def test_a_crop_of_a_convolution_becomes_its_padding(op, begin, end, pads, stride):
    expected = _run_cropped(_cropped(op, begin, end, pads, stride))[0]
    after = crops_into_convolutions(_cropped(op, begin, end, pads, stride))
    assert [n.op_type for n in after.graph.node] == [op]
    assert after.graph.node[0].output[0] == "y"
    got = _run_cropped(after)[0]
    assert got.shape == expected.shape
    # the same products summed in the same order, the borders left out: equal to float32 rounding
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_two_crops_in_a_row_both_fold_into_the_convolution():
    """A strided convolution's input gradient may crop its own output, then the gradient of an explicit
    padding layer crops it again."""
    expected = _run_cropped(_cropped("Conv", 0, 1, (1, 1, 3, 3), 1, twice=True))[0]
    after = crops_into_convolutions(_cropped("Conv", 0, 1, (1, 1, 3, 3), 1, twice=True))
    assert [n.op_type for n in after.graph.node] == ["Conv"]
    np.testing.assert_allclose(_run_cropped(after)[0], expected, rtol=1e-6, atol=1e-6)  # as above


def test_a_crop_that_would_need_negative_padding_or_a_shared_output_is_kept():
    assert [n.op_type for n in crops_into_convolutions(_cropped("Conv", 2, 2)).graph.node] == ["Conv", "Pad"]
    shared = crops_into_convolutions(_cropped("Conv", 1, 1, readers=2))
    assert [n.op_type for n in shared.graph.node] == ["Conv", "Pad", "Relu"]


def _scaled_conv(group: int, readers: int = 1, kernel_through_transpose: bool = False):
    """y = Conv(x * s, W) with s [1, 4, 1, 1] constant; W [4, 4/group, 3, 3], or its transpose's transpose."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32), "s")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"], name="scale")]
    if kernel_through_transpose:  # a kernel computed from a constant, as the exported input gradients' are
        inits.append(numpy_helper.from_array(w.transpose(1, 0, 2, 3).copy(), "wt"))
        nodes.append(helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0, 2, 3]))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(helper.make_node("Conv", ["xs", "w"], ["y"], group=group, pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])]
    if readers == 2:
        outputs.append(helper.make_tensor_value_info("xs", TensorProto.FLOAT, [2, 4, 6, 6]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6])], outputs, inits
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def _run_scaled(model):
    x = np.random.default_rng(7).standard_normal((2, 4, 6, 6)).astype(np.float32)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("group, through", [(1, False), (4, False), (1, True)], ids=["dense", "depthwise", "computed"])
def test_a_channel_scale_before_a_convolution_moves_onto_its_kernel(group, through):
    expected = _run_scaled(_scaled_conv(group, kernel_through_transpose=through))
    after = channel_scales_into_convolutions(_scaled_conv(group, kernel_through_transpose=through))
    conv = next(n for n in after.graph.node if n.op_type == "Conv")
    assert conv.input[0] == "x" and not any(n.name == "scale" for n in after.graph.node)
    # (x s) W against x (W s): the same products rounded in another order, float32
    np.testing.assert_allclose(_run_scaled(after), expected, rtol=1e-5, atol=1e-5)


def test_a_scale_read_elsewhere_or_across_grouped_channels_stays():
    for model in (_scaled_conv(1, readers=2), _scaled_conv(2)):
        after = channel_scales_into_convolutions(model)
        assert [n.name for n in after.graph.node if n.op_type == "Mul"] == ["scale"]


def _bound_masks(channels: int = 16, blocked: bool = False):
    """ReLU6 and ReLU with their gradients' masks as the exporter writes them, on [2, C, 4, 4]:
    out6 = g * Cast(Not(Or(y6 <= 0, y6 >= 6))), y6 = Clip(x, 0, 6); out = g * Cast(Not(y <= 0)), y = Relu(x).
    `blocked`: x (a convolution for each activation), g and the masked gradients pass through 1x1
    convolutions first and after, as in a step."""
    rng = np.random.default_rng(8)
    shape = [2, channels, 4, 4]
    inits = {"lo": np.float32(0), "hi": np.float32(6)}
    nodes = []
    x6, x, g = "x", "x", "g"
    if blocked:
        for name in ("x6", "x", "g", "m6", "m"):
            inits[f"w_{name}"] = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32)
        nodes += [helper.make_node("Conv", ["x", f"w_{name}"], [f"{name}c"]) for name in ("x6", "x")]
        nodes.append(helper.make_node("Conv", ["g", "w_g"], ["gc"]))
        x6, x, g = "x6c", "xc", "gc"
    nodes += [
        helper.make_node("Clip", [x6, "lo", "hi"], ["y6"]),
        helper.make_node("LessOrEqual", ["y6", "lo"], ["le6"]),
        helper.make_node("GreaterOrEqual", ["y6", "hi"], ["ge6"]),
        helper.make_node("Or", ["le6", "ge6"], ["c6"]),
        helper.make_node("Not", ["c6"], ["k6"]),
        helper.make_node("Cast", ["k6"], ["mask6"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [g, "mask6"], ["gm6"]),
        helper.make_node("Relu", [x], ["y"]),
        helper.make_node("LessOrEqual", ["y", "lo"], ["le"]),
        helper.make_node("Not", ["le"], ["k"]),
        helper.make_node("Cast", ["k"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [g, "mask"], ["gm"]),
    ]
    if blocked:
        nodes += [helper.make_node("Conv", ["gm6", "w_m6"], ["out6"]), helper.make_node("Conv", ["gm", "w_m"], ["out"])]
    else:
        nodes += [helper.make_node("Identity", ["gm6"], ["out6"]), helper.make_node("Identity", ["gm"], ["out"])]
    vec = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [vec("x", TensorProto.FLOAT, shape), vec("g", TensorProto.FLOAT, shape)],
        [vec("out6", TensorProto.FLOAT, shape), vec("out", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))


def _run_bound_masks(model, x, g, optimized=None):
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = optimized
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "g": g})


def test_a_relu_or_clip_mask_becomes_clipped_depthwise_convolutions_with_the_same_values():
    # the bounds, a rounding step inside and outside them, values far past them, and the smallest
    # distance from 0 that ReLU6's mask is exact for (2^-123; ReLU's: 2^-126, float32's smallest normal)
    edges = [0, 6, np.nextafter(6, 0), np.nextafter(6, 7), 2.0**-123, 1e-30, -1e-30, 7e5, -3e38, 3e38]
    x = np.random.default_rng(9).uniform(-3, 9, (2, 16, 4, 4)).astype(np.float32)
    x.reshape(-1)[: len(edges)] = edges
    g = np.random.default_rng(10).standard_normal(x.shape).astype(np.float32)
    expected = _run_bound_masks(_bound_masks(), x, g)
    after = bound_masks_as_convolutions(_bound_masks())
    ops = [n.op_type for n in after.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Clip") == 4, ops  # two sides for ReLU6, one for ReLU
    assert not {"LessOrEqual", "GreaterOrEqual", "Or", "Not", "Cast"} & set(ops)
    # the masks are exactly 0 or 1 here, so the products are bit for bit the comparisons' ones
    for got, want in zip(_run_bound_masks(after, x, g), expected):
        np.testing.assert_array_equal(got, want)
    assert all((want == 0).any() and (want != 0).any() for want in expected)


def test_a_mask_of_unblockable_channels_or_read_elsewhere_is_kept():
    after = bound_masks_as_convolutions(_bound_masks(channels=24))  # not a multiple of 16
    assert "Conv" not in [n.op_type for n in after.graph.node]
    shared = _bound_masks()
    shared.graph.output.append(helper.make_tensor_value_info("k", TensorProto.BOOL, None))  # Not's output read
    ops = [n.op_type for n in bound_masks_as_convolutions(shared).graph.node]
    assert ops.count("Not") == 1 and ops.count("Conv") == 2  # the ReLU6 mask rewritten, the ReLU one kept


def test_rewritten_masks_leave_onnxruntimes_blocked_layout_alone(tmp_path):
    """Between convolutions, the masks and the masked gradients stay in onnxruntime's CPU blocked layout:
    the layout reorders left are those at the graph's inputs and outputs."""
    rng = np.random.default_rng(11)
    x, g = (rng.standard_normal((2, 16, 4, 4)).astype(np.float32) for _ in range(2))

    def reorders(model, name):
        path = str(tmp_path / name)
        values = _run_bound_masks(model, x, g, optimized=path)
        ops = [n.op_type for n in onnx.load(path).graph.node]
        return sum(op.startswith("Reorder") for op in ops), values

    before, expected = reorders(_bound_masks(blocked=True), "before.onnx")
    if before == 0:
        pytest.skip("this CPU's onnxruntime does not use its blocked layout (NCHWc)")
    after, got = reorders(bound_masks_as_convolutions(_bound_masks(blocked=True)), "after.onnx")
    assert after == 4, after  # x and g in, out6 and out out
    assert before > after
    for a, b in zip(got, expected):  # the same masks, the same convolutions: float32 rounding only
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
