"""D given as a TorchScript archive, run graph by graph from Python so that its submodules can be tapped.

Compiled code calls submodules without forward hooks, so the archive's graphs are interpreted here:
each `prim::CallMethod` on a submodule runs that submodule's graph the same way, and its output passes
an identity module named after the submodule (`layer1.0`), whose hooks the taps read. The ATen ops
run as torch ops, so autograd and make_fx see the same computation as the compiled archive. Graphs
with control flow or other prim nodes are not interpreted: such archives keep class targets only.

Only the graphs that forward runs are read, and only the submodules it calls are tap points: an archive
may hold submodules its forward never calls (a detection head, an auxiliary classifier, a module that
another method uses), which a traced archive keeps without any forward of their own.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .op_origin import Recorder, forward_op

_PRIM = {
    "prim::Constant",
    "prim::GetAttr",
    "prim::CallMethod",
    "prim::ListConstruct",
    "prim::TupleConstruct",
    "prim::ListUnpack",
    "prim::TupleUnpack",
    "prim::NumToTensor",
}


def _forward_graph(module):
    """The graph of the module's forward; None where it has none (reading `.graph` then raises)."""
    try:
        return module.graph
    except (RuntimeError, AttributeError):
        return None


def called_modules(archive: torch.jit.ScriptModule) -> dict[str, torch.jit.ScriptModule] | None:
    """The submodules that the archive's forward calls, directly or through the submodules it calls, by
    qualified name (`layer1.0`) in the order of their first call; None where a graph that forward runs
    holds anything but ATen ops and the prim nodes above, calls a method other than forward, or calls a
    module that is not an attribute of a module (or where the archive has no forward). The graphs of the
    submodules forward does not call are not read."""
    found: dict[str, torch.jit.ScriptModule] = {}

    def walk(module, prefix: str) -> bool:
        graph = _forward_graph(module)
        if graph is None:
            return False
        # the modules that values of this graph hold, by the value's number: (qualified name, module)
        held = {next(iter(graph.inputs())).unique(): (prefix, module)}
        for node in graph.nodes():
            kind = node.kind()
            if not (kind.startswith("aten::") or kind in _PRIM):
                return False
            if kind == "prim::GetAttr":
                owner = held.get(next(iter(node.inputs())).unique())
                field = node.s("name")
                value = getattr(owner[1], field, None) if owner is not None else None
                if isinstance(value, torch.jit.ScriptModule):
                    held[node.output().unique()] = (f"{owner[0]}.{field}" if owner[0] else field, value)
            elif kind == "prim::CallMethod":
                callee = held.get(next(iter(node.inputs())).unique())
                if node.s("name") != "forward" or callee is None or not callee[0]:
                    return False
                name, submodule = callee
                if name not in found:
                    found[name] = submodule
                    if not walk(submodule, name):
                        return False
        return True

    return found if walk(archive, "") else None


def interpretable(archive: torch.jit.ScriptModule, example: torch.Tensor) -> bool:
    """Whether every graph that the archive's forward runs holds only ATen ops and the prim nodes above,
    and the interpretation gives the archive's own output on `example`."""
    if called_modules(archive) is None:
        return False
    try:
        with torch.no_grad():
            ours, theirs = TorchScriptClassifier(archive)(example), archive(example)
    except Exception:  # anything the interpretation cannot run leaves the archive compiled, untapped
        return False
    return isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor) and torch.equal(ours, theirs)


class TorchScriptClassifier(nn.Module):
    """The archive, interpreted; `taps[name]` is the identity module after submodule `name`, for each
    submodule that forward calls (see `called_modules`; the archive must pass it)."""

    def __init__(self, archive: torch.jit.ScriptModule):
        super().__init__()
        called = called_modules(archive)
        if called is None:
            raise ValueError("the archive's forward runs graphs that cannot be interpreted")
        self.archive = archive
        self.taps = nn.ModuleDict()
        self._called = called
        self._tap_of, self._ops, self._stack = {}, {}, [""]  # the stack: submodules being run
        # tap points in the archive's own module order (its definition order), as for a module's layers
        order = {name: i for i, (name, _) in enumerate(archive.named_modules())}
        for i, name in enumerate(sorted(called, key=lambda n: order.get(n, len(order)))):
            self.taps[f"tap_{i}"] = nn.Identity()
            self._tap_of[name] = self.taps[f"tap_{i}"]

    def _op(self, schema: str):
        """The ATen overload a node's schema names, and which of its arguments are keyword-only."""
        if schema not in self._ops:
            parsed = torch._C.parse_schema(schema)
            packet = getattr(torch.ops.aten, parsed.name.split("::", 1)[1])
            self._ops[schema] = (
                getattr(packet, parsed.overload_name or "default"),
                [a.name if a.kwarg_only else None for a in parsed.arguments],
            )
        return self._ops[schema]

    def tap_points(self) -> dict[str, nn.Module]:
        return dict(self._tap_of)

    def forward(self, x):
        return self._run(self.archive, "", [x])

    @property
    def forward_name(self) -> str:
        return f"{self.archive.original_name}.forward"

    def run_labelled(self, x: torch.Tensor, stack: list) -> torch.Tensor:
        """The archive on `x` with stack[-1] the qualified name of the submodule running ("" for forward)."""
        before, self._stack = self._stack, stack
        try:
            return self(x)
        finally:
            self._stack = before

    def layer_calling(self, example: torch.Tensor, op: str) -> tuple[str, str] | None:
        """(submodule name, its class) of the innermost submodule whose graph calls `op` (or the op
        whose backward `op` is); None where none does."""
        found = {}
        try:
            with torch.no_grad(), Recorder(self._stack, found):
                self(example)
        except Exception:  # the failure being reported is the export's; this lookup only adds detail
            return None
        name = found.get(forward_op(op))
        if not name:
            return None
        return name, self._called[name].original_name

    def _run(self, module, prefix: str, args: list):
        graph = module.graph
        inputs = list(graph.inputs())
        # values are keyed by their number in the graph (the Python wrappers of a Value are not stable)
        env = {inputs[0].unique(): module, **{v.unique(): a for v, a in zip(inputs[1:], args)}}
        names = {inputs[0].unique(): prefix}  # the qualified name of each module value
        for node in graph.nodes():
            kind, ins = node.kind(), [env[v.unique()] for v in node.inputs()]
            if kind == "prim::Constant":
                out = node.output().toIValue()
            elif kind == "prim::GetAttr":
                field = node.s("name")
                out = getattr(ins[0], field)
                owner = names.get(next(iter(node.inputs())).unique())
                if owner is not None and isinstance(out, torch.jit.ScriptModule):
                    names[node.output().unique()] = f"{owner}.{field}" if owner else field
            elif kind == "prim::CallMethod":
                name = names[next(iter(node.inputs())).unique()]
                self._stack.append(name)
                try:
                    out = self._run(ins[0], name, ins[1:])
                finally:
                    self._stack.pop()
                if name in self._tap_of and isinstance(out, torch.Tensor):
                    out = self._tap_of[name](out)
            elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
                out = ins if kind == "prim::ListConstruct" else tuple(ins)
            elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
                for v, value in zip(node.outputs(), ins[0]):
                    env[v.unique()] = value
                continue
            elif kind == "prim::NumToTensor":
                out = torch.scalar_tensor(ins[0]) if not isinstance(ins[0], torch.Tensor) else ins[0]
            else:
                op, keyword = self._op(node.schema())
                out = op(*[a for a, k in zip(ins, keyword) if not k], **{k: a for a, k in zip(ins, keyword) if k})
            outputs = list(node.outputs())
            if len(outputs) == 1:
                env[outputs[0].unique()] = out
            else:
                for v, value in zip(outputs, out):
                    env[v.unique()] = value
        results = [env[v.unique()] for v in graph.outputs()]
        return results[0] if len(results) == 1 else tuple(results)
