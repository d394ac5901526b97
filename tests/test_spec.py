import json
import math

import pytest

from dgn_engine.errors import UsageError
from dgn_engine.spec import RunSpec, default_spec


def test_paper_defaults():
    u, p = default_spec("untrained"), default_spec("pretrained")
    assert (u.optimizer.name, u.optimizer.lr, u.optimizer.beta1, u.optimizer.beta2, u.optimizer.eps) == (
        "adamax",
        0.002,
        0.9,
        0.999,
        1e-8,
    )
    assert (u.noise.kind, u.noise.sigma) == ("additive", 2.0)
    assert (u.regularizer.kind, u.regularizer.weight, u.steps) == ("l1-final-gamma", 0.01, 500)
    assert (p.optimizer.name, p.optimizer.lr, p.optimizer.momentum) == ("nesterov", 0.01, 0.1)
    assert (p.noise.kind, p.noise.sigma) == ("multiplicative", 0.05)
    assert (p.regularizer.kind, p.regularizer.weight, p.steps) == ("l2-alpha", 0.1, 1200)
    assert u.lam == p.lam == 0.01
    assert (p.snapshots.count, p.snapshots.keep) == (30, 10)
    assert p.snapshots.steps(1200) == list(range(839, 1200, 40))  # the last 10 of 30 snapshots


def test_json_round_trip():
    spec = default_spec("pretrained", targets=("class:1", "0.5*class:2+class:3"), seed=7)
    again = RunSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"mode": "half"}, "mode must be one of"),
        ({"steps": 0}, "steps must lie between 1 and 1,000,000"),
        ({"lam": -1}, "lambda must be >= 0"),
        ({"optimizer": {"name": "rmsprop", "lr": 0.1}}, "optimizer must be one of"),
        ({"optimizer": {"name": "nesterov", "lr": 0}}, "learning rate must be > 0"),
        ({"noise": {"kind": "additive", "sigma": -1}}, "sigma must be >= 0"),
        ({"noise": {"kind": "none", "sigma": 0}}, "noise none is pixel mode's"),
        ({"transforms": {"jitter": 0.6}}, "jitter is a share of the image side"),
        ({"transforms": {"rotate": -1}}, "rotate is in degrees"),
        ({"regularizer": {"kind": "l1-final-gamma", "weight": 0.01}}, "needs --mode untrained"),
        ({"snapshots": {"count": 3, "keep": 5}}, "keep <= count"),
        ({"targets": ["class:1", "class:1"]}, "listed twice"),
        ({"colour": "red"}, "unknown spec field"),
        ({"target_leak": 2}, "target leak must lie in"),
    ],
)
def test_validation(change, fragment):
    d = default_spec("pretrained").to_json()
    d.update(change)
    with pytest.raises(UsageError, match=fragment):
        RunSpec.from_json(d)


def test_hyper_vector():
    spec = default_spec("pretrained")
    assert list(spec.hyper()) == [0.01, 0.9, 0.999, 1e-8, 0.1, 0.05, 0.1, 1.0]
    assert spec.hyper().sigma == 0.05 and spec.hyper().target_leak == 1.0  # by name, in HYPER's order
    from dgn_engine.spec import HYPER, Hyper

    assert Hyper.entry(list(spec.hyper()), "reg_weight") == 0.1 and Hyper._fields == HYPER
    assert not any(math.isnan(v) for v in default_spec("untrained").hyper())
