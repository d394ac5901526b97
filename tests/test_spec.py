import json
import math

import pytest

from dgn_engine.errors import UsageError
from dgn_engine.spec import Noise, RunSpec, default_spec, with_settings


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
        ({"regularizer": {"kind": "l1-final-gamma", "weight": 0.01}}, "needs mode='untrained'"),
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


def test_paper_is_the_method_to_the_letter():
    from dgn_engine import demo
    from dgn_engine.spec import paper_spec

    for mode in ("untrained", "pretrained"):
        paper = with_settings(demo.spec(mode), ("class:1",), paper=True, seed=4)
        table1 = default_spec(mode)
        assert (paper.optimizer, paper.noise, paper.regularizer, paper.steps) == (
            table1.optimizer,
            table1.noise,
            table1.regularizer,
            table1.steps,
        )
        assert (paper.image_range, paper.target_leak, paper.transforms.enabled, paper.seed) == ("free", 0.0, False, 4)
        assert with_settings(demo.spec(mode), paper=True, lr=0.5).optimizer.lr == 0.5  # options still apply
    with pytest.raises(UsageError, match="pixel mode is not the paper's method"):
        paper_spec("pixel")


def test_untrained_defaults_follow_the_input_size():
    from dgn_engine import demo

    small, large = default_spec("untrained", image_size=32), default_spec("untrained", image_size=224)
    assert (small.noise.sigma, small.optimizer.lr, small.steps) == (0.5, 0.01, 1000)
    assert (small.image_range, small.snapshots.pick, small.transforms.enabled) == ("bounded", "median", False)
    # from 224 px: the ImageNet settings (LARGE_G_UNTRAINED), with a sigmoid output, transforms and the best snapshot
    assert (large.noise.sigma, large.optimizer.lr, large.steps) == (0.0, 0.05, 500)
    assert (large.image_range, large.snapshots.pick, large.transforms.text()) == ("sigmoid", "best", "standard")
    assert default_spec("untrained", image_size=240) == large
    paper = default_spec("untrained")  # input size unknown: Table 1's numbers
    assert (paper.noise.sigma, paper.optimizer.lr, paper.steps) == (2.0, 0.002, 500)
    assert demo.spec("untrained") == small
    assert default_spec("pretrained", image_size=32) == default_spec("pretrained")  # only untrained mode's G shrinks


def test_noise_schedule_and_snapshot_pick():
    spec = default_spec("untrained", noise=Noise("additive", 2.0, "linear"))
    assert [spec.noise.scale(s, 5) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]  # ends at zero
    assert default_spec("untrained").noise.scale(3, 5) == 1.0  # constant: the paper's
    assert with_settings(spec, noise_schedule="constant", pick="best").snapshots.pick == "best"
    assert RunSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UsageError, match="noise schedule must be one of constant, linear"):
        with_settings(spec, noise_schedule="cosine")
    with pytest.raises(UsageError, match="snapshot pick must be one of median, best"):
        with_settings(spec, pick="mean")


def test_untrained_width_with_a_sigmoid_output():
    from dgn_engine.plan import generator_plan, untrained_width

    assert untrained_width(224, "bounded") == 1.0 and untrained_width(112, "free") == 0.5
    assert untrained_width(240, "sigmoid") == 0.1875 and untrained_width(32, "sigmoid") == 32 / 224
    # the default G's channels are multiples of 8: onnxruntime's blocked (NCHWc) convolutions need them, and
    # at a fifth (26, 51, 102 channels) the step was barely faster than at a quarter
    default = generator_plan("untrained", 240, 3, untrained_width(240, "sigmoid"), linear_head=True)
    assert all(c.cin % 8 == 0 for c in default.convs()) and default.feature_channels == 24
    head = generator_plan("untrained", 240, 3, 0.25, linear_head=True).convs()[-1]
    assert (head.cout, head.relu, head.bn) == (3, False, True)  # the sigmoid is the output's nonlinearity
