"""Where a step's work goes, read from its ONNX graph alone (no GPU, no torch): FLOPs and bytes moved
per node, summed per role (`dgn-engine bench --cost`).

Per node (shapes from the graph's own shape information, completed by onnx.shape_inference; the
weights in weights.bin are never loaded):
- FLOPs, a multiply-add counted as 2:
  Conv: 2 * N * Cout * prod(output spatial) * Cin/groups * prod(kernel) (the bias is not counted);
  ConvTranspose: 2 * N * Cin * prod(input spatial) * Cout/groups * prod(kernel) (every input element
  meets the whole kernel; the same formula as torch.utils.flop_counter's for a transposed convolution);
  MatMul: 2 * (output elements, batch dimensions included) * the inner size K; Gemm: 2 * M * N * K
  (C and alpha/beta not counted, as torch counts addmm);
  reductions (Reduce*, ArgMax/ArgMin, GlobalAveragePool, CumSum): one per input element;
  MaxPool/AveragePool: one per output element per window element;
  ScatterElements/ScatterND with a reduction: one per update element;
  pure data movement (Reshape, Transpose, Slice, Gather, Expand, Pad, Concat, Cast, ...): none;
  every other op (elementwise arithmetic, comparisons, Where, activations): one per output element.
- bytes moved: the sizes of the node's distinct input and output tensors (initialisers included);
  none for the ops onnxruntime runs as aliases of their input, without a copy (Reshape, Squeeze,
  Unsqueeze, Flatten, Identity).

Roles. The exporter records no role: the graph's node metadata (pkg.torch.onnx.fx_node) names the
ATen op of the traced step each node comes from, but make_fx traces the backward eagerly, so forward
and backward ops look alike there (stack traces are empty). The role is read from the graph's
structure, in this order:
1. bookkeeping: nodes that depend on no graph input other than `hyper` (the run settings): constants,
   shapes, kernels flipped at trace time (onnxruntime folds the constant ones when it loads the graph),
   the settings picked from `hyper`;
2. forward: the other ancestors of the outputs that are not state (loss, activation, image), and the
   nodes translated from the same ATen op as one of them (the argmax indices of a max pooling, which
   the forward computes for its backward);
3. the state inputs are those X with an output new.X; the trainables are the state inputs the forward
   reads; the optimiser's inputs are the others (slot S of trainable P is named S.P; the step count t).
   The gradient of trainable P is the last tensor through which every path from the forward to P's new
   state outputs (new.P, new.S.P) passes, that does not depend on the optimiser's inputs and is not a
   product with a run setting (lr * g, which an update rule computes);
4. update: the nodes after a gradient, or after an optimiser input, that lead to a new.* output;
5. input gradient: the other nodes that lead to the gradient of an input trainable (alpha, spectrum,
   phase: the code or image being optimised), which is the end of the chain of activation gradients
   through D and G; weight gradient: the nodes that lead only to the gradients of G's layer parameters
   (untrained mode; D is frozen, so the step has no weight gradients of D);
6. bookkeeping: anything else.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import deque
from dataclasses import dataclass, field

from .errors import UsageError, setting

ROLES = ("forward", "input gradient", "weight gradient", "update", "bookkeeping")
SETTINGS = "hyper"  # the step graph's input of run settings
NEW = "new."  # the prefix of the state outputs
INPUT_TRAINABLES = ("alpha", "spectrum", "phase")  # the code or image being optimised, per mode
FX_NODE = "pkg.torch.onnx.fx_node"

MATRIX = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # what torch's FlopCounterMode counts too
REDUCTIONS = {
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "CumSum",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool", "LpPool"}
SCATTERS = {"ScatterElements", "ScatterND"}
ALIASES = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
MOVEMENT = ALIASES | {
    "Transpose", "Expand", "Slice", "Gather", "GatherElements", "GatherND", "Concat", "Split", "Pad", "Tile",
    "Cast", "CastLike", "Shape", "Size", "Constant", "ConstantOfShape", "Range", "DepthToSpace", "SpaceToDepth",
    "Compress", "NonZero", "OneHot", "EyeLike", "Trilu",
}  # fmt: skip

TORCH_COVERS = (
    "torch GFLOP: torch.utils.flop_counter's formulas, convolutions and matrix products only (elementwise ops, "
    "reductions and pooling count 0), split where autograd's backward runs, convolution_backward's input and "
    "weight parts apart (every other backward op counts as input gradient, the reductions that give bias and "
    "BatchNorm gradients included), a grouped convolution's "
    "weight gradient counted once; torch MB: the inputs and outputs of every ATen op torch runs, views "
    "excluded"
)
FOOTNOTE = (
    f"(graph GFLOP and MB: every node by the rules of dgn_engine/cost.py; conv+mm: the graph's Conv, "
    f"ConvTranspose, MatMul and Gemm FLOPs, what the torch column counts; {TORCH_COVERS})"
)


@dataclass
class RoleCost:
    nodes: int = 0
    flops: int = 0  # every op, by the formulas above
    matrix_flops: int = 0  # Conv, ConvTranspose, MatMul, Gemm only: what torch's FlopCounterMode counts
    bytes: int = 0

    def add(self, other: "RoleCost") -> None:
        self.nodes += other.nodes
        self.flops += other.flops
        self.matrix_flops += other.matrix_flops
        self.bytes += other.bytes

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "flops": self.flops, "matrix_flops": self.matrix_flops, "bytes": self.bytes}


@dataclass
class GraphCost:
    """The cost of one graph: per role and in total, each node's role, and the size of the forward
    tensors the gradients read (what the graph keeps alive for its backward)."""

    roles: dict[str, RoleCost]
    node_roles: list[str]
    kept_bytes: int = 0
    unknown_shapes: list[str] = field(default_factory=list)  # nodes counted as 0 for want of a shape

    @property
    def total(self) -> RoleCost:
        t = RoleCost()
        for r in self.roles.values():
            t.add(r)
        return t

    def to_json(self) -> dict:
        return {
            "roles": {r: c.to_json() for r, c in self.roles.items()},
            "total": self.total.to_json(),
            "kept_for_backward_bytes": self.kept_bytes,
            "unknown_shapes": self.unknown_shapes,
        }


# -- per node ------------------------------------------------------------------------------------


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_flops(node, shape) -> int | None:
    """FLOPs of one node by the rules in the module's docstring; `shape(name)` gives a tensor's shape
    (a tuple) or None. None where a shape the formula needs is unknown."""
    op = node.op_type
    if op in MOVEMENT:
        return 0
    out = shape(node.output[0]) if node.output and node.output[0] else None
    if op == "Conv":
        w = shape(node.input[1])
        if out is None or w is None:
            return None
        n, cout, *spatial = out
        return 2 * n * cout * math.prod(spatial) * w[1] * math.prod(w[2:])  # w[1] = Cin / groups
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        if x is None or w is None:
            return None
        n, cin, *spatial = x
        return 2 * n * cin * math.prod(spatial) * w[1] * math.prod(w[2:])  # w[1] = Cout / groups
    if op == "MatMul":
        a = shape(node.input[0])
        if out is None or a is None:
            return None
        return 2 * math.prod(out) * a[-1]
    if op == "Gemm":
        a = shape(node.input[0])
        if out is None or a is None:
            return None
        return 2 * math.prod(out) * (a[0] if _attr(node, "transA", 0) else a[1])
    if op in REDUCTIONS:
        x = shape(node.input[0])
        return None if x is None else math.prod(x)
    if op in POOLS:
        return None if out is None else math.prod(out) * math.prod(_attr(node, "kernel_shape", [1]))
    if op in SCATTERS:
        if _attr(node, "reduction", b"none") in (b"none", "none"):
            return 0
        updates = shape(node.input[2])
        return None if updates is None else math.prod(updates)
    return None if out is None else math.prod(out)


def node_bytes(node, size) -> int | None:
    """Bytes of the node's distinct input and output tensors; `size(name)` gives a tensor's bytes or None."""
    if node.op_type in ALIASES:
        return 0
    total = 0
    for name in dict.fromkeys([*node.input, *node.output]):
        if name:
            b = size(name)
            if b is None:
                return None
            total += b
    return total


# -- roles ---------------------------------------------------------------------------------------


def _fx_name(node) -> str | None:
    for p in node.metadata_props:
        if p.key == FX_NODE:
            m = re.match(r"%(\S+) :", p.value)
            return m.group(1) if m else None
    return None


class _Dag:
    """The graph's nodes as a DAG: producers, predecessors, successors, a topological order."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
        self.preds = [sorted({self.producer[x] for x in n.input if x in self.producer}) for n in nodes]
        self.succs = [[] for _ in nodes]
        for i, ps in enumerate(self.preds):
            for j in ps:
                self.succs[j].append(i)
        indegree = [len(p) for p in self.preds]
        ready = deque(i for i, d in enumerate(indegree) if d == 0)
        self.order = []
        while ready:
            i = ready.popleft()
            self.order.append(i)
            for j in self.succs[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    ready.append(j)
        if len(self.order) != len(nodes):
            raise UsageError("the step graph has a cycle; export it again")

    def readers(self, names) -> set[int]:
        names = set(names)
        return {i for i, n in enumerate(self.nodes) if names.intersection(n.input)}

    def _closure(self, seeds, edges) -> set[int]:
        seen, todo = set(seeds), list(seeds)
        while todo:
            for j in edges[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    def descendants(self, seeds) -> set[int]:
        """The seeds and every node after them."""
        return self._closure(seeds, self.succs)

    def ancestors(self, seeds) -> set[int]:
        """The seeds and every node before them."""
        return self._closure(seeds, self.preds)


def _gradient_node(dag: _Dag, region: set[int], sources: set[int], sinks: set[int], excluded: set[int]):
    """The last node (in topological order) of `region` that every path from `sources` to `sinks`
    passes through, leaving out `excluded`; None where there is none. Paths are counted both ways: a
    node lies on every path exactly when (paths to it) x (paths from it) = (all paths)."""
    into = dict.fromkeys(region, 0)
    for i in dag.order:
        if i in region:
            into[i] = (i in sources) + sum(into[j] for j in dag.preds[i] if j in region)
    out_of = dict.fromkeys(region, 0)
    for i in reversed(dag.order):
        if i in region:
            out_of[i] = (i in sinks) + sum(out_of[j] for j in dag.succs[i] if j in region)
    total = sum(out_of[i] for i in sources)
    if not total:
        return None
    on_every_path = [i for i in region if i not in excluded and into[i] * out_of[i] == total]
    position = {i: k for k, i in enumerate(dag.order)}
    return max(on_every_path, key=position.__getitem__, default=None)


def assign_roles(graph) -> list[str]:
    """Each node's role, by the rule in the module's docstring."""
    nodes = list(graph.node)
    dag = _Dag(nodes)
    initialisers = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initialisers]
    outputs = [v.name for v in graph.output]
    produced = lambda names: {dag.producer[o] for o in names if o in dag.producer}  # noqa: E731

    live = dag.descendants(dag.readers(x for x in inputs if x != SETTINGS))
    forward = dag.ancestors(produced(o for o in outputs if not o.startswith(NEW))) & live
    forward_ops = {_fx_name(nodes[i]) for i in forward} - {None}
    forward |= {i for i in live if _fx_name(nodes[i]) in forward_ops}

    state = [x for x in inputs if NEW + x in outputs]
    read_by_forward = {x for i in forward for x in nodes[i].input}
    trainables = [x for x in state if x in read_by_forward]
    optimiser = [x for x in state if x not in trainables]
    after_optimiser = dag.descendants(dag.readers(optimiser)) - forward
    settings = dag.descendants(dag.readers([SETTINGS])) - live  # the run settings picked from `hyper`
    scaled = dag.readers(o for i in settings for o in nodes[i].output)  # lr * g and the like
    to_new_state = dag.ancestors(produced(NEW + x for x in state))

    update = after_optimiser & to_new_state
    gradient_roots: dict[str, set[int]] = {}
    for p in trainables:
        sinks = produced(NEW + x for x in state if x == p or x.endswith("." + p))
        region = dag.ancestors(sinks) - forward - (set(range(len(nodes))) - live)
        sources = {i for i in region if any(j in forward for j in dag.preds[i])}
        g = _gradient_node(dag, region, sources, sinks, after_optimiser | scaled)
        if g is None:  # no single tensor: everything before the optimiser's inputs join
            gradient_roots[p] = region - after_optimiser
        else:
            gradient_roots[p] = {g}
            update |= (dag.descendants({g}) - {g}) & to_new_state
    update = (update & live) - forward
    inputs_chain = dag.ancestors(set().union(*(gradient_roots[p] for p in trainables if p in INPUT_TRAINABLES)))
    gradient = dag.ancestors(set().union(*gradient_roots.values())) & live

    roles = []
    for i in range(len(nodes)):
        if i not in live:
            roles.append("bookkeeping")
        elif i in forward:
            roles.append("forward")
        elif i in update:
            roles.append("update")
        elif i in gradient:
            roles.append("input gradient" if i in inputs_chain else "weight gradient")
        else:
            roles.append("bookkeeping")
    return roles


# -- a graph -------------------------------------------------------------------------------------


def tensor_shapes(model):
    """name -> (shape, bytes per element) of every tensor whose shape is known."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the graph's own value_info then; a node without a shape counts 0 and is listed
        pass
    g = model.graph
    known = {}
    for v in [*g.input, *g.output, *g.value_info]:
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            known[v.name] = (tuple(d.dim_value for d in t.shape.dim), t.elem_type)
    for t in g.initializer:
        known[t.name] = (tuple(t.dims), t.data_type)

    def itemsize(elem_type: int) -> int:
        try:
            return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
        except Exception:
            return 4

    return {name: (s, itemsize(e)) for name, (s, e) in known.items()}


def graph_cost(model) -> GraphCost:
    """The cost of a loaded ModelProto (external data need not be loaded) per role, by the rules in the
    module's docstring."""
    shapes = tensor_shapes(model)

    def shape(name):
        return shapes[name][0] if name in shapes else None

    def size(name):
        return math.prod(shapes[name][0]) * shapes[name][1] if name in shapes else None

    nodes = list(model.graph.node)
    node_roles = assign_roles(model.graph)
    roles = {r: RoleCost() for r in ROLES}
    unknown = []
    for node, role in zip(nodes, node_roles):
        flops, moved = node_flops(node, shape), node_bytes(node, size)
        if flops is None or moved is None:
            unknown.append(node.name or node.op_type)
        c = roles[role]
        c.nodes += 1
        c.flops += flops or 0
        c.bytes += moved or 0
        if node.op_type in MATRIX:
            c.matrix_flops += flops or 0
    # what the graph keeps for its backward: forward tensors that gradient nodes read
    produced_by = {o: r for node, r in zip(nodes, node_roles) for o in node.output if o}
    kept = {
        x
        for node, r in zip(nodes, node_roles)
        if r.endswith("gradient")
        for x in node.input
        if produced_by.get(x) == "forward"
    }
    return GraphCost(roles, node_roles, sum(size(x) or 0 for x in kept), unknown)


def load_step_graph(art):
    """The step graph of an artifacts folder, its digest checked, without its weights."""
    try:
        import onnx
    except ImportError:
        raise UsageError("bench --cost reads the step graph with the onnx package: pip install onnx") from None
    art.require("step-graph")
    path = art.graph("step")
    entry = art.manifest["files"][os.path.basename(path)]
    with art.reading():
        with open(path, "rb") as f:
            data = f.read(entry["size"] + 1)
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UsageError(
            f"artifacts file {path!r} is not the file the export wrote (its sha256 differs): it was changed "
            "or damaged; export the artifacts again"
        )
    return onnx.load_model_from_string(data)


# -- the comparison with torch ----------------------------------------------------------------------


def cost_row(art, size: str, with_torch: bool = True) -> dict:
    """The graph's cost of one artifacts folder and, where torch is installed and `with_torch`, torch
    autograd's on the model the folder was exported from."""
    graph = graph_cost(load_step_graph(art))
    row = {"size": size, "mode": art.mode, "k": art.batch, "artifacts": art.path, "graph": graph.to_json()}
    row["torch"] = None
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            row["torch_missing"] = "torch is not installed (pip install 'dgn-engine[export]')"
        else:
            from .exporter.cost_torch import artifacts_torch_cost

            row["torch"] = artifacts_torch_cost(art)
    if row["torch"]:
        t = row["torch"]["total"]["flops"]
        row["matrix_ratio"] = graph.total.matrix_flops / t if t else None
    return row


def _g(x: int) -> str:
    return f"{x / 1e9:11.4f}"


def _mb(x: int) -> str:
    return f"{x / 1e6:9.2f}"


def format_row(row: dict) -> list[str]:
    """The table of one cost row: role | nodes | graph GFLOPs (all ops, conv+matmul) | graph MB | torch."""
    g, t = row["graph"], row.get("torch")
    lines = [
        f"{row['size']} {row['mode']} K={row['k']}: {g['total']['nodes']} nodes",
        f"  {'role':16s} {'nodes':>5s} {'graph GFLOP':>11s} {'conv+mm':>11s} {'graph MB':>9s} "
        f"{'torch GFLOP':>11s} {'torch MB':>9s}",
    ]
    for role in [*ROLES, "total"]:
        c = g["total"] if role == "total" else g["roles"][role]
        tc = (t["total"] if role == "total" else t["roles"].get(role)) if t else None
        torch_cols = f"{_g(tc['flops'])} {_mb(tc['bytes'])}" if tc else f"{'-':>11s} {'-':>9s}"
        lines.append(
            f"  {role:16s} {c['nodes']:5d} {_g(c['flops'])} {_g(c['matrix_flops'])} {_mb(c['bytes'])} {torch_cols}"
        )
    if t:
        ratio = row.get("matrix_ratio")
        lines.append(
            f"  graph/torch: {ratio:.3f}x the convolution and matrix-product FLOPs"
            if ratio
            else "  graph/torch: torch counted no FLOPs"
        )
        if t["flop_counter_total"] != t["total"]["flops"]:
            lines.append(
                f"  (FlopCounterMode itself counts {t['flop_counter_total'] / 1e9:.4f} GFLOP: it counts a grouped "
                "convolution's weight gradient `groups` times over; the column counts it once)"
            )
        lines.append(
            f"  activations kept for the backward: graph {g['kept_for_backward_bytes'] / 1e6:.2f} MB (forward "
            f"tensors the gradients read), torch {t['saved_bytes'] / 1e6:.2f} MB (tensors autograd saved)"
        )
    elif row.get("torch_missing"):
        lines.append(f"  torch columns: {row['torch_missing']}")
    if g["unknown_shapes"]:
        lines.append(f"  {len(g['unknown_shapes'])} nodes had no known shape and count 0")
    return lines


def _folder_for(size: str, mode: str, k: int | None, cache: str):
    """The demo's shipped artifacts where they serve this mode and K; else an export into `cache`."""
    from . import demo
    from .artifacts import load_artifacts

    if size == "demo":
        shipped = demo.shipped_artifacts(mode)
        if os.path.isdir(shipped):
            art = load_artifacts(shipped)
            if k is None or art.batch == k:
                return art
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(
            f"bench --cost exports the {size} {mode} artifacts with torch: pip install 'dgn-engine[export]', or "
            f"give an artifacts folder ({setting('artifacts')})"
        ) from None
    from .bench import artifacts_for

    return artifacts_for(size, mode, k or 1, cache)


def cost(sizes: list[str], modes: list[str], batches: list[int] | None, cache: str | None, log=print) -> list[dict]:
    """Rows for each size x mode x K (K None: the shipped demo artifacts' batch, else 1)."""
    import tempfile

    cache = cache or os.path.join(tempfile.gettempdir(), "dgn-engine-bench")
    os.makedirs(cache, exist_ok=True)
    rows = []
    for size in sizes:
        for mode in modes:
            for k in batches or [None]:
                row = cost_row(_folder_for(size, mode, k, cache), size)
                rows.append(row)
                for line in format_row(row):
                    log(line)
    return rows


def cost_artifacts(path: str, log=print) -> list[dict]:
    from .artifacts import load_artifacts

    row = cost_row(load_artifacts(path), os.path.basename(os.path.abspath(path)))
    for line in format_row(row):
        log(line)
    return [row]
