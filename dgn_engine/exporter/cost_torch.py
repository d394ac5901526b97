"""torch autograd's side of `bench --cost`: the FLOPs and bytes of one eager step of the coupled model
an artifacts folder was exported from, per role (forward, input gradient, weight gradient, update).

FLOPs are torch.utils.flop_counter's (FlopCounterMode's formulas, and its total as a check): it counts
convolutions and matrix products only. An op runs in the backward when autograd's engine runs it
(torch._C._current_graph_task_id() != -1); before the first such op it is forward, after the
backward update. convolution_backward's FLOPs and bytes are split by its output mask into the input
gradient (grad_output, weight, grad_input) and the weight gradient (input, grad_weight, grad_bias;
grad_output too where no input gradient is computed); every other backward op counts as input
gradient (D is frozen, and G's layer parameters reach the step through convolutions only).
FlopCounterMode counts a grouped convolution's weight gradient `groups` times over (untrained mode's K
generators are one convolution with groups = K): here it counts once. Bytes are
the sizes of each ATen op's tensor inputs and outputs, views (which copy nothing) excluded; `saved_bytes`
is the size of the distinct tensors autograd saved for the backward that the step made (D's weights and
the state it is given left out).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..cost import ROLES
from ..state import initial_state
from ..targets import Target, Term, objective_weights
from ..transforms import parameters
from .coupled import CoupledStep, Sources, build_coupled

aten = torch.ops.aten


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class _Split(TorchDispatchMode):
    """Each ATen op's FLOPs (FlopCounterMode's formulas) and bytes, by role."""

    def __init__(self):
        super().__init__()
        self.flops = dict.fromkeys(ROLES, 0)
        self.bytes = dict.fromkeys(ROLES, 0)
        self.backward_seen = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if torch._C._current_graph_task_id() != -1:
            self.backward_seen = True
            role = "input gradient"
        else:
            role = "update" if self.backward_seen else "forward"
        packet = func.overloadpacket
        if packet is aten.convolution_backward:
            self._convolution_backward(args, kwargs, out)
            return out
        if packet in flop_registry:
            self.flops[role] += flop_registry[packet](*args, **kwargs, out_val=out)
        if not func.is_view:
            self.bytes[role] += _bytes(tree_flatten((args, kwargs))[0]) + _bytes(tree_flatten(out)[0])
        return out

    def _convolution_backward(self, args, kwargs, out):
        grad_out, x, w, *rest = args
        mask, groups = list(rest[-1]), rest[-2]
        formula = flop_registry[aten.convolution_backward]
        if mask[0]:
            self.flops["input gradient"] += formula(
                grad_out, x, w, *rest[:-1], [True, False, False], **kwargs, out_val=out
            )
            self.bytes["input gradient"] += _bytes([grad_out, w, out[0]])
        if mask[1] or mask[2]:
            # FlopCounterMode counts a grouped convolution's weight gradient `groups` times over (its formula
            # takes every input channel for every output channel): counted here once
            part = [False, mask[1], False]
            self.flops["weight gradient"] += formula(grad_out, x, w, *rest[:-1], part, **kwargs, out_val=out) // groups
            self.bytes["weight gradient"] += _bytes([x, out[1], out[2]] + ([] if mask[0] else [grad_out]))


def step_cost(coupled: CoupledStep, spec, k: int) -> dict:
    """One float32 CPU step of K class targets (as the exporter's example), counted by role."""
    coupled.to(torch.float32, "cpu")
    n_classes = coupled.layout["output"][0]
    targets = [Target((Term("class", i % n_classes),)) for i in range(k)]
    state = {
        n: torch.from_numpy(v)
        for n, v in initial_state(coupled.mode, coupled.plan, coupled.optimizer, spec.seed, targets).items()
    }
    weights, penalty = objective_weights(targets, coupled.layout, spec.lam)
    rng = np.random.default_rng(0)
    features = coupled.plan.features
    noise = torch.from_numpy(rng.standard_normal((k, features)).astype(np.float32)) if features else None
    size = coupled.classifier.preprocessing.image_size
    transform = (
        torch.from_numpy(parameters(rng.random((k, 4)), spec.transforms, size, size)) if coupled.transforms else None
    )
    weights = {n: torch.from_numpy(w) for n, w in weights.items()}
    penalty, hyper = torch.from_numpy(penalty), torch.tensor(spec.hyper(), dtype=torch.float32)
    given = [*coupled.classifier.module.parameters(), *coupled.classifier.module.buffers(), *state.values()]
    given += [*(coupled.decoder or {}).values(), *weights.values(), penalty, hyper, noise, transform]
    inputs = {t.untyped_storage().data_ptr() for t in given if t is not None}
    saved: dict[tuple, int] = {}

    def pack(t):  # what autograd keeps for the backward, the step's own tensors (not D's weights, the state)
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
            saved[key] = t.numel() * t.element_size()
        return t

    split = _Split()
    with FlopCounterMode(display=False) as counter, split, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        coupled.step(state, noise, weights, penalty, hyper, transform)
    roles = {r: {"flops": split.flops[r], "bytes": split.bytes[r]} for r in ROLES if r != "bookkeeping"}
    total = {"flops": sum(split.flops.values()), "bytes": sum(split.bytes.values())}
    return {
        "roles": roles,
        "total": total,
        # FlopCounterMode's own count: the same but for grouped convolutions' weight gradients (see _Split)
        "flop_counter_total": counter.get_total_flops(),
        "saved_bytes": sum(saved.values()),
        "torch": torch.__version__,
    }


def artifacts_torch_cost(art) -> dict:
    """step_cost of the coupled model an artifacts folder was exported from (its manifest's sources,
    spec, taps and batch), as `run --backend torch` builds it."""
    coupled = build_coupled(Sources.from_json(art.manifest["sources"]), art.spec, list(art.manifest["taps"]))
    return step_cost(coupled, art.spec, art.batch)
