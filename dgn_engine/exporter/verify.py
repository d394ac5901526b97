"""Numerical verification: the step graph in onnxruntime and torch float32 against torch float64.

The same targets, initial state and noise go through every path for N steps. Each step of each
path starts from float64's state before that step, so what is measured is the error of one step's
computation, not chaos compounded over steps (AdaMax turns any gradient near zero into a full
lr-sized move of either sign). Per step and path we compare the change of the state, part by part
(the trainables, then each optimiser slot, each part as one vector: ||da - db|| / ||db||) for each
target, and the loss (max |a - b| over targets, over max |b|). The state is judged at the error that
75% of the target-steps are within (see AGREEING), the loss at its worst; both worsts are reported.

With AdaMax (and Adam) the trainables' change m / (u + eps) is ill-conditioned where a gradient is near 0: a
rounding difference there (or a ReLU input within rounding of 0) moves an entry by up to lr. So the
gradient is compared through the slots m and u, which are linear in it, and the trainables through
the update of the path's own slots (the same rule every path applies), which is well-conditioned.
"""

from __future__ import annotations

import os

import numpy as np

from .. import demo
from ..engine.backends.torch_reference import TorchBackend
from ..engine.loop import transform_streams
from ..engine.selfcheck import verify_targets
from ..errors import UsageError
from ..rng import NoiseStreams
from ..state import STEP_COUNT
from ..update_rules import adam_move, adamax_move, adamax_step_size
from .coupled import Sources, build_coupled
from .weights import sha256_file

# A path passes when its error is at most this multiple of torch float32's own error against
# float64 (the accuracy float32 arithmetic allows on this graph), or below the floor (float32
# sums of thousands of products carry relative errors of ~1e-6; 1e-4 leaves room for the order).
RELATIVE_TO_FLOAT32 = 5.0
FLOOR = 1e-4
# The state's error is judged per target and step, at the share AGREEING of them. The step's gradient
# jumps where D's max-pooling switches between two near-equal inputs (or a ReLU input crosses 0), and
# float32 rounding puts such a near-tie on either side: then one target's gradient differs by ~1% at
# that step (untrained demo with transforms, 20 steps x 4 targets: 5 of 80 for the step graph, 4 of 80
# for torch float32 itself; without transforms too, less often). How many depends on the CPU's rounding:
# on an Intel Xeon, where an AMD EPYC had passed 90 %, an ONNX-file ResNet (untrained, 10 steps x 2
# targets) had 3 of 20 for the step graph and 2 for torch float32, the Inception net (pretrained, 6 x 2)
# 2 of 12 and 1. A wrong graph is wrong for every target and step, or for every step of one kind of target
# (half of them here); the loss, which is continuous, is judged at its worst.
AGREEING = 0.75


def _parts(names) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    for name in names:
        head = name.split(".")[0]
        part = head + "." if head in ("m", "u", "v") else ("t" if name == "t" else "trainables")
        parts.setdefault(part, []).append(name)
    return parts


def _own_update(after: dict, before: dict, spec) -> dict:
    """AdaMax's or Adam's new trainables from a path's own new slots: what its trainables must be."""
    o, t = spec.optimizer, after[STEP_COUNT]

    def move(n):
        if o.name == "adam":
            return adam_move(before[n], after[f"m.{n}"], after[f"v.{n}"], t, o.lr, o.beta1, o.beta2, o.eps, np.sqrt)
        step_size = adamax_step_size(t, o.lr, o.beta1)
        return adamax_move(before[n], after[f"m.{n}"], after[f"u.{n}"], step_size, o.eps)

    return {n: move(n) if f"m.{n}" in after else value for n, value in after.items()}


def step_error(after: dict, ref_after: dict, before: dict, spec) -> tuple[float, str]:
    """Worst relative L2 error of one step's change of the state, over the state's parts."""
    worst, where = 0.0, ""
    own = _own_update(after, before, spec) if spec.optimizer.name in ("adamax", "adam") else None
    for part, names in _parts(ref_after).items():
        delta = np.concatenate([np.ravel(after[n] - before[n]) for n in names])
        target = own if own is not None and part == "trainables" else ref_after
        ref = np.concatenate([np.ravel(target[n] - before[n]) for n in names])
        norm = np.linalg.norm(ref)
        err = float(np.linalg.norm(delta - ref) / norm) if norm > 0 else float(np.abs(delta).max(initial=0))
        if err >= worst:
            worst, where = err, part
    return worst, where


def loss_error(loss: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(loss - ref).max() / max(np.abs(ref).max(), 1e-12))


def _row(arrays: dict, row: int) -> dict:
    return {n: v if n == STEP_COUNT else v[row : row + 1] for n, v in arrays.items()}


def verify(art, steps: int, device: str, log=print, engine_backends=()) -> tuple[bool, dict]:
    """Run every available path; print their errors and tolerances.

    Returns (all passed, {path: {"state", "state_worst", "loss", "state_tolerance", "loss_tolerance"}})."""
    sources = Sources.from_json(art.manifest["sources"])
    spec, targets = art.spec, verify_targets(art)
    taps = art.manifest["taps"]
    reference = TorchBackend(build_coupled(sources, spec, taps), "float64", device)
    paths = [TorchBackend(build_coupled(sources, spec, taps), "float32", device), *engine_backends]
    names = ["torch-float32", *(b.name for b in engine_backends)]
    for backend in (reference, *paths):
        backend.start(targets, spec)
    noise = NoiseStreams(spec.seed, targets, reference.features)
    transforms = transform_streams(reference, spec, targets)
    state_errors = {n: [] for n in names}  # (error, part) per target and step
    loss_errors = {n: 0.0 for n in names}
    for _ in range(steps):
        n, t = noise.next(), transforms.next() if transforms else None
        before = {k: v.astype(np.float64) for k, v in reference.state_arrays().items()}
        ref_loss = reference.step(n, read=True, image=False, transform=t).loss.astype(np.float64)
        ref_after = reference.state_arrays()
        for name, backend in zip(names, paths):
            backend.load_state(before)
            loss = backend.step(n, read=True, image=False, transform=t).loss.astype(np.float64)
            after = {k: v.astype(np.float64) for k, v in backend.state_arrays().items()}
            for row in range(len(targets)):
                state_errors[name].append(step_error(_row(after, row), _row(ref_after, row), _row(before, row), spec))
            loss_errors[name] = max(loss_errors[name], loss_error(loss, ref_loss))
    log(
        f"{steps} steps, {len(targets)} targets ({', '.join(t.text for t in targets)}); "
        "error of each target's step against torch float64:"
    )
    ok, report = True, {}
    for name in names:
        errs = sorted(state_errors[name])
        typical, (worst, where), l_err = _quantile(errs), errs[-1], loss_errors[name]
        report[name] = {"state": typical, "state_worst": worst, "loss": l_err}
        if name == "torch-float32":
            base_state, base_loss = typical, l_err
            log(
                f"  {name:14s} state {typical:.2e} (worst {worst:.2e}: {where})  loss {l_err:.2e}  "
                "(the float32 baseline)"
            )
            continue
        s_tol, l_tol = max(RELATIVE_TO_FLOAT32 * base_state, FLOOR), max(RELATIVE_TO_FLOAT32 * base_loss, FLOOR)
        passed = typical <= s_tol and l_err <= l_tol
        ok &= passed
        report[name].update(state_tolerance=s_tol, loss_tolerance=l_tol)
        log(
            f"  {name:14s} state {typical:.2e} (worst {worst:.2e}: {where}; tolerance {s_tol:.2e})  "
            f"loss {l_err:.2e} (tolerance {l_tol:.2e})  {'ok' if passed else 'FAILED'}"
        )
    return ok, report


def _quantile(sorted_errors: list) -> float:
    """The error that AGREEING of the target-steps are within (nearest rank)."""
    rank = max(0, int(np.ceil(AGREEING * len(sorted_errors))) - 1)
    return sorted_errors[rank][0]


def check_sources(art) -> None:
    """The files the manifest names must still be the files the graphs were made from."""
    for name, digest in art.manifest["sha256"].items():
        path = demo.resolve_source(name)
        if not os.path.isfile(path):
            raise UsageError(f"{path!r}, from which these artifacts were exported, is gone; verify needs it")
        if sha256_file(path) != digest:
            raise UsageError(f"{path!r} changed since these artifacts were exported (sha256 differs)")
