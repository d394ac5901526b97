"""verify --no-torch: the step graph against the artifacts' own G and D graphs, and wrong gradients
that it must refuse."""

from dataclasses import replace

import numpy as np
import pytest

from dgn_engine import demo
from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_selfcheck_passes_on_the_demo(mode, capsys):
    assert main(["verify", "--no-torch", "--artifacts", demo.shipped_artifacts(mode)]) == 0
    assert "directions per target" in capsys.readouterr().out


def _per_target_dot(a: dict, b: dict) -> np.ndarray:
    return sum((a[n].reshape(len(a[n]), -1) * b[n].reshape(len(b[n]), -1)).sum(1) for n in a)


def _orthogonal(slots: dict, name: str) -> dict:
    """The first half of tensor `name`'s gradient 5% too large, then the part along the whole gradient
    taken out: each target's gradient is off by a few percent in a direction orthogonal to it."""
    error = {n: np.zeros_like(v, dtype=np.float64) for n, v in slots.items()}
    flat, half = slots[name].reshape(len(slots[name]), -1), slots[name][0].size // 2
    error[name].reshape(len(flat), -1)[:, :half] = 0.05 * flat[:, :half]
    along = _per_target_dot(error, slots) / _per_target_dot(slots, slots)
    for n, v in slots.items():
        error[n] -= along.reshape((-1,) + (1,) * (v.ndim - 1)) * v
    assert np.abs(_per_target_dot(error, slots)).max() < 1e-6 * _per_target_dot(slots, slots).max()
    return {n: (v + error[n]).astype(v.dtype) for n, v in slots.items()}


def _noisy(slots: dict) -> dict:
    """Random noise of 20% of each target's gradient norm. Spread evenly over thousands of entries, noise
    shows along no direction by more than its square (4%): float32 differences cannot see 5% of it."""
    rng = np.random.default_rng(3)
    noise = {n: rng.standard_normal(v.shape) for n, v in slots.items()}
    scale = 0.2 * np.sqrt(_per_target_dot(slots, slots) / _per_target_dot(noise, noise))
    return {n: (v + scale.reshape((-1,) + (1,) * (v.ndim - 1)) * noise[n]).astype(v.dtype) for n, v in slots.items()}


WRONG = {
    "5% too large": lambda s: {n: v * 1.05 for n, v in s.items()},
    "a few percent off, orthogonal": lambda s: _orthogonal(s, max(s, key=lambda n: np.abs(s[n]).sum())),
    "20% random noise": _noisy,
    "the largest tensor's gradient dropped": lambda s: {
        n: (np.zeros_like(v) if n == max(s, key=lambda m: np.abs(s[m]).sum()) else v) for n, v in s.items()
    },
    "a conv weight's gradient transposed": lambda s: {
        n: (v.swapaxes(1, 2) if n == "conv1.weight" else v) for n, v in s.items()
    },
}
CASES = [("pretrained", w) for w in WRONG if "conv" not in w] + [
    ("untrained", "a conv weight's gradient transposed"),
    ("untrained", "a few percent off, orthogonal"),
]


@pytest.mark.parametrize("mode,wrong", CASES)
def test_selfcheck_catches_a_wrong_gradient(mode, wrong, monkeypatch):
    """The step's gradient (read from the optimiser's slots after the step, which are linear in it)
    made wrong in one way: selfcheck must fail. Before its directions were per target and per tensor,
    all but the 5% scale error passed."""
    real, calls = StepGraphBackend.state_arrays, []

    def skewed(self):  # the second read is the state after the step
        state = real(self)
        calls.append(1)
        if len(calls) == 2:
            slots = {n: v for n, v in state.items() if n.startswith(("m.", "v."))}
            by_name = WRONG[wrong]({n.split(".", 1)[1]: v for n, v in slots.items()})
            state = {**state, **{n: by_name[n.split(".", 1)[1]] for n in slots}}
        return state

    monkeypatch.setattr(StepGraphBackend, "state_arrays", skewed)
    lines = []
    assert not selfcheck(load_artifacts(demo.shipped_artifacts(mode)), log=lines.append)
    assert "FAILED" in lines[-1]


def test_selfcheck_catches_a_dropped_penalty(monkeypatch):
    """A graph that leaves out the lambda term of the loss (here: the step fed no penalty weights)."""
    real = StepGraphBackend.start
    monkeypatch.setattr(
        StepGraphBackend, "start", lambda self, targets, spec: real(self, targets, replace(spec, lam=0.0))
    )
    assert not selfcheck(load_artifacts(demo.shipped_artifacts("pretrained")), log=lambda *_: None)
