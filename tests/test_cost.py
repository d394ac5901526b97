"""bench --cost: the FLOP formulas on hand-built graphs, the role rule on a hand-built step, and on the
demo's shipped step graphs the roles, the totals and the forward against torch's FlopCounterMode."""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dgn_engine import demo
from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.cost import (
    ROLES,
    assign_roles,
    cost_row,
    graph_cost,
    load_step_graph,
    node_bytes,
    node_flops,
    tensor_shapes,
)
from dgn_engine.state import trainable_shapes
from tests.conftest import error_line

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initialisers=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        list(initialisers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _flops_by_output(model) -> dict[str, int]:
    shapes = tensor_shapes(model)
    return {n.output[0]: node_flops(n, lambda x: shapes[x][0] if x in shapes else None) for n in model.graph.node}


def test_flop_formulas_on_a_hand_built_graph():
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),  # 2x3x8x8 * 4x3x3x3 -> 2x4x8x8
            helper.make_node("Conv", ["x4", "wg"], ["grouped"], group=2),  # 2x4x6x6 * 6x2x3x3 -> 2x6x4x4
            helper.make_node("ConvTranspose", ["xt", "wt"], ["transposed"], strides=[2, 2]),  # 1x4x5x5 -> 1x3x11x11
            helper.make_node("MatMul", ["a", "b"], ["batched"]),  # [2,3,4,5] @ [2,3,5,6]
            helper.make_node("MatMul", ["a3", "b2"], ["broadcast"]),  # [3,4,5] @ [5,7]
            helper.make_node("Gemm", ["ga", "gb", "gc"], ["gemm"], transA=1),  # [5,4]^T @ [5,6] + [6]
            helper.make_node("ReduceSum", ["conv"], ["sum"], keepdims=0),
            helper.make_node("MaxPool", ["conv"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Reshape", ["conv", "shape"], ["flat"]),
            helper.make_node("Transpose", ["conv"], ["moved"], perm=[0, 2, 3, 1]),
        ],
        [
            ("x", [2, 3, 8, 8]),
            ("w", [4, 3, 3, 3]),
            ("x4", [2, 4, 6, 6]),
            ("wg", [6, 2, 3, 3]),
            ("xt", [1, 4, 5, 5]),
            ("wt", [4, 3, 3, 3]),
            ("a", [2, 3, 4, 5]),
            ("b", [2, 3, 5, 6]),
            ("a3", [3, 4, 5]),
            ("b2", [5, 7]),
            ("ga", [5, 4]),
            ("gb", [5, 6]),
            ("gc", [6]),
        ],
        ["sum", "pool", "relu", "flat", "moved", "grouped", "transposed", "batched", "broadcast", "gemm"],
        [numpy_helper.from_array(np.array([2, -1], np.int64), "shape")],
    )
    flops = _flops_by_output(model)
    assert flops["conv"] == 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3  # 2 N Cout Hout Wout Cin k k
    assert flops["grouped"] == 2 * 2 * 6 * 4 * 4 * (4 // 2) * 3 * 3  # Cin / groups
    assert flops["transposed"] == 2 * 1 * 4 * 5 * 5 * 3 * 3 * 3  # every input element meets the kernel
    assert flops["batched"] == 2 * (2 * 3) * 4 * 6 * 5  # batch x M x N x K
    assert flops["broadcast"] == 2 * 3 * 4 * 7 * 5
    assert flops["gemm"] == 2 * 4 * 6 * 5  # M = 4 (A transposed), N = 6, K = 5; C not counted
    assert flops["sum"] == 2 * 4 * 8 * 8  # one per input element
    assert flops["pool"] == 2 * 4 * 4 * 4 * (2 * 2)  # one per output element per window element
    assert flops["relu"] == 2 * 4 * 8 * 8
    assert flops["flat"] == flops["moved"] == 0
    cost = graph_cost(model)
    assert not cost.unknown_shapes
    matrix = ("conv", "grouped", "transposed", "batched", "broadcast", "gemm")
    assert cost.total.matrix_flops == sum(flops[k] for k in matrix)
    assert cost.total.flops == sum(flops.values())
    # bytes: the node's inputs and outputs, none for an alias (Reshape), a copy for a Transpose
    conv_out = 2 * 4 * 8 * 8 * 4
    nodes = {n.output[0]: n for n in model.graph.node}
    shapes = tensor_shapes(model)
    size = lambda x: int(np.prod(shapes[x][0])) * shapes[x][1]  # noqa: E731
    assert node_bytes(nodes["conv"], size) == (2 * 3 * 8 * 8 + 4 * 3 * 3 * 3) * 4 + conv_out
    assert node_bytes(nodes["flat"], size) == 0 and node_bytes(nodes["moved"], size) == 2 * conv_out


def _tiny_step(trainable: str):
    """A hand-made step of one trainable with Nesterov's update: forward, gradient, update, settings."""
    p, v = trainable, f"v.{trainable}"
    nodes = [
        helper.make_node("Gather", ["hyper", "zero"], ["lr"]),  # bookkeeping: settings
        helper.make_node("Gather", ["hyper", "four"], ["mu"]),
        helper.make_node("Mul", [p, "c"], ["h"]),  # forward
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("ReduceSum", ["r"], ["loss"], keepdims=0),
        helper.make_node("Greater", ["h", "zerof"], ["mask"]),  # gradient: reads the forward
        helper.make_node("Cast", ["mask"], ["maskf"], to=F),
        helper.make_node("Mul", ["maskf", "c"], ["g"]),
        helper.make_node("Mul", ["lr", "g"], ["lg"]),  # update: lr * g, used twice
        helper.make_node("Mul", ["mu", v], ["mv"]),
        helper.make_node("Sub", ["mv", "lg"], [f"new.{v}"]),
        helper.make_node("Mul", ["mu", f"new.{v}"], ["mv2"]),
        helper.make_node("Sub", ["mv2", "lg"], ["step"]),
        helper.make_node("Add", [p, "step"], [f"new.{p}"]),
        helper.make_node("Add", ["t", "onef"], ["new.t"]),
    ]
    init = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(4, np.int64), "four"),
        numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "c"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zerof"),
        numpy_helper.from_array(np.array(1.0, np.float32), "onef"),
    ]
    inputs = [(p, [2, 3]), (v, [2, 3]), ("t", []), ("hyper", [8])]
    return _model(nodes, inputs, [f"new.{p}", f"new.{v}", "new.t", "loss"], init)


@pytest.mark.parametrize("trainable, gradient", [("alpha", "input gradient"), ("conv0.weight", "weight gradient")])
def test_role_rule_on_a_hand_built_step(trainable, gradient):
    model = _tiny_step(trainable)
    roles = dict(zip((n.output[0] for n in model.graph.node), assign_roles(model.graph)))
    assert roles == {
        "lr": "bookkeeping",
        "mu": "bookkeeping",
        "h": "forward",
        "r": "forward",
        "loss": "forward",
        "mask": gradient,
        "maskf": gradient,
        "g": gradient,  # the gradient ends before lr * g, though lr * g too lies on every path
        "lg": "update",
        "mv": "update",
        f"new.v.{trainable}": "update",
        "mv2": "update",
        "step": "update",
        f"new.{trainable}": "update",
        "new.t": "update",
    }


@pytest.fixture(scope="module")
def shipped_rows():
    """Both shipped modes, the graph and torch's step on the same model (a few seconds)."""
    return {
        mode: cost_row(load_artifacts(demo.shipped_artifacts(mode)), "demo") for mode in ("pretrained", "untrained")
    }


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_shipped_roles_cover_every_node_and_sum_to_the_totals(mode, shipped_rows):
    art = load_artifacts(demo.shipped_artifacts(mode))
    model = load_step_graph(art)
    roles = assign_roles(model.graph)
    assert len(roles) == len(model.graph.node) and set(roles) <= set(ROLES)
    g = shipped_rows[mode]["graph"]
    assert not g["unknown_shapes"]
    for what in ("nodes", "flops", "matrix_flops", "bytes"):
        assert g["total"][what] == sum(c[what] for c in g["roles"].values())
    assert g["total"]["nodes"] == len(model.graph.node)
    for role in ("forward", "input gradient", "update", "bookkeeping"):
        assert g["roles"][role]["nodes"] > 0
    # D and the pretrained decoder are frozen: weight gradients exist only for untrained mode's G
    assert (g["roles"]["weight gradient"]["nodes"] > 0) == (mode == "untrained")
    # the update reads one gradient tensor per trainable, and nothing else the gradients compute
    produced = {o: r for n, r in zip(model.graph.node, roles) for o in n.output}
    read = {x for n, r in zip(model.graph.node, roles) if r == "update" for x in n.input}
    assert len({x for x in read if produced.get(x, "").endswith("gradient")}) == len(trainable_shapes(mode, art.plan))


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_shipped_forward_against_torch_flop_counter(mode, shipped_rows):
    """The graph's forward runs the same convolutions and matrix products as torch's, with the same shapes,
    counted by the same convention (2 per multiply-add, bias left out): equal within 1 %. Counting every
    op, the graph's forward adds its elementwise ops, reductions and pooling (one FLOP per element), which
    in a VGG-style D and G are under 5 % of the convolutions' work: within a factor 1.05."""
    row = shipped_rows[mode]
    g, t = row["graph"]["roles"], row["torch"]["roles"]
    assert t["forward"]["flops"] > 0
    assert g["forward"]["matrix_flops"] == pytest.approx(t["forward"]["flops"], rel=0.01)
    assert 1.0 <= g["forward"]["flops"] / t["forward"]["flops"] <= 1.05
    # the weight gradients are the same convolutions too; FlopCounterMode's own total counts a grouped
    # convolution's weight gradient `groups` (= K in untrained mode) times over, the column once
    assert g["weight gradient"]["matrix_flops"] == pytest.approx(t["weight gradient"]["flops"], rel=0.01)
    counter, total = row["torch"]["flop_counter_total"], row["torch"]["total"]["flops"]
    assert counter == total if mode == "pretrained" else counter > total
    # the input gradient's convolutions do at least torch's work (more where G pads explicitly: the adjoint
    # convolution also computes the padding's gradient, which the Pad's backward then crops)
    assert g["input gradient"]["matrix_flops"] >= t["input gradient"]["flops"] * 0.99
    assert row["matrix_ratio"] == row["graph"]["total"]["matrix_flops"] / row["torch"]["total"]["flops"]


def test_cli_prints_the_table(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["bench", "--cost", "--modes", "pretrained", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "demo pretrained K=5" in text and "graph/torch:" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("role"))
    assert header.split()[:4] == ["role", "nodes", "graph", "GFLOP"] and "torch" in header
    for role in [*ROLES, "total"]:
        assert any(line.strip().startswith(role) for line in text.splitlines())
    rows = json.loads(out.read_text())["cost"]
    assert [(r["mode"], r["k"]) for r in rows] == [("pretrained", 5)] and rows[0]["torch"]["total"]["flops"] > 0


def test_cli_refusals(capsys):
    shipped = demo.shipped_artifacts("pretrained")
    assert "K = 5 only" in error_line(capsys, ["bench", "--cost", "--artifacts", shipped, "--batch", "3"])
    assert "--quality" in error_line(capsys, ["bench", "--cost", "--quality"])


def test_the_engine_side_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, dgn_engine.cost, dgn_engine.cli.bench; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
