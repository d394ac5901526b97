"""verify --no-torch: the step graph against the artifacts' own G and D graphs."""

import pytest

from dgn_engine import demo
from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_selfcheck_passes_on_the_demo(mode, capsys):
    assert main(["verify", "--no-torch", "--artifacts", demo.shipped_artifacts(mode)]) == 0
    assert "gradient along 3 directions" in capsys.readouterr().out


def test_selfcheck_catches_a_wrong_gradient(monkeypatch):
    real = StepGraphBackend.state_arrays
    calls = []

    def skewed(self):  # the second read is the state after the step: scale its slots by 1.05
        state = real(self)
        calls.append(1)
        if len(calls) == 2:
            state = {n: (v * 1.05 if n.startswith(("m.", "v.")) else v) for n, v in state.items()}
        return state

    monkeypatch.setattr(StepGraphBackend, "state_arrays", skewed)
    assert not selfcheck(load_artifacts(demo.shipped_artifacts("pretrained")), log=lambda *_: None)
