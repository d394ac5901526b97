import re

import numpy as np
import pytest

from dgn_engine.errors import UsageError
from dgn_engine.targets import OUTPUT, check_target, objective_weights, parse_target

LAYOUT = {OUTPUT: (10,), "features.3": (16, 8, 8), "classifier.0": (32,), "blocks.1": (17, 24)}


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("class:668", "class:668"),
        ("class:9+class:339", "class:9+class:339"),
        ("channel:features.28:17", "channel:features.28:17"),
        ("neuron:features.28:17:7:7", "neuron:features.28:17:7:7"),
        ("neuron:blocks.1:17:5", "neuron:blocks.1:17:5"),
        ("0.5*class:9", "0.5*class:9"),
        ("1.0*class:9 + 2*channel:features.3:1", "class:9+2*channel:features.3:1"),
        ("-0.25*class:1+class:2", "-0.25*class:1+class:2"),
    ],
)
def test_parse_canonical(text, canonical):
    target = parse_target(text)
    assert target.text == canonical
    assert parse_target(target.text) == target  # canonical text round-trips
    assert "/" not in target.id and ":" not in target.id


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty target"),
        ("class:", "cannot read"),
        ("class:-3", "non-negative integer"),
        ("class:abc", "non-negative integer"),
        ("klass:3", "cannot read"),
        ("channel:features.28", "not of the form channel:LAYER:C"),
        ("neuron:features.28", "not of the form neuron:LAYER:C:Y:X"),
        ("0*class:3", "finite non-zero"),
        ("class:3+class:3", "appears twice"),
        ("x*class:3", "cannot read"),
    ],
)
def test_parse_errors(text, fragment):
    with pytest.raises(UsageError, match=fragment) as err:
        parse_target(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("class:10", "class 10 is outside the classifier, which has classes 0..9"),
        ("channel:features.9:0", "unknown layer 'features.9'; valid layers: features.3, classifier.0, blocks.1"),
        ("channel:features.3:16", "channels 0..15"),
        ("neuron:features.3:0:8:0", "positions y 0..7, x 0..7"),
        ("neuron:classifier.0:1:0:0", "no channels and positions"),
        ("neuron:features.3:1:2", "write neuron:features.3:C:Y:X"),
        ("channel:blocks.1:24", "channels 0..23 (the last axis of its [tokens, features] output)"),
        ("neuron:blocks.1:3:17", "TOKEN 0..16"),
        ("neuron:blocks.1:3:1:1", "neuron:blocks.1:C:TOKEN"),
    ],
)
def test_range_errors(text, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)):
        check_target(parse_target(text), LAYOUT)


def test_objective_weights():
    targets = [
        parse_target("class:3"),
        parse_target("0.5*class:1+class:2"),
        parse_target("channel:features.3:4"),
        parse_target("neuron:features.3:2:1:5"),
    ]
    w, penalty = objective_weights(targets, LAYOUT, lam=0.01)
    assert w[OUTPUT][0, 3] == 1 and w[OUTPUT][0].sum() == 1
    assert w[OUTPUT][1, 1] == 0.5 and w[OUTPUT][1, 2] == 1
    np.testing.assert_allclose(w["features.3"][2, 4], np.full((8, 8), 1 / 64))  # the channel mean
    assert w["features.3"][2].sum() == pytest.approx(1)
    assert w["features.3"][3, 2, 1, 5] == 1 and w["features.3"][3].sum() == 1
    np.testing.assert_array_equal(penalty, np.float32([0.01, 0.01, 0, 0]))  # lambda only for class targets


def test_token_layer_weights():
    """A [tokens, features] layer: a channel is one feature, read as its mean over the tokens; a neuron
    one feature of one token."""
    w, _ = objective_weights(
        [parse_target("channel:blocks.1:4"), parse_target("2*neuron:blocks.1:4:16")], LAYOUT, lam=0.01
    )
    expected = np.zeros((17, 24), np.float32)
    expected[:, 4] = 1 / 17
    np.testing.assert_allclose(w["blocks.1"][0], expected)
    assert w["blocks.1"][1, 16, 4] == 2 and w["blocks.1"][1].sum() == 2


def test_numpy_objective_matches_the_torch_step():
    """The engine's numpy loss (selfcheck, the reports) against the step's torch objective, float64,
    on class outputs that are D's after the final ReLU (where the target's leak changes nothing)."""
    import torch

    from dgn_engine.kernels.objective import objective
    from dgn_engine.targets import objective_loss, weighted_activation

    layout = {OUTPUT: (6,), "features.3": (4, 5, 5), "blocks.0": (7, 8)}
    targets = [parse_target(t) for t in ("class:2", "0.5*class:1+channel:features.3:3", "neuron:blocks.0:2:6")]
    weights, penalty = objective_weights(targets, layout, 0.3)
    rng = np.random.default_rng(0)
    acts = {n: rng.standard_normal((3, *s)) for n, s in layout.items()}
    acts[OUTPUT] = np.abs(acts[OUTPUT])
    tw = {n: torch.from_numpy(w).double() for n, w in weights.items()}
    activation, pen = objective(
        {n: torch.from_numpy(a) for n, a in acts.items()}, tw, torch.from_numpy(penalty).double()
    )
    # the same sums in float64 in another order: rounding near 1e-15
    np.testing.assert_allclose(weighted_activation(weights, acts), activation.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        objective_loss(weights, penalty, acts), (pen - activation).numpy(), rtol=1e-12, atol=1e-12
    )
