import numpy as np
import pytest

from dgn_engine.errors import UsageError
from dgn_engine.targets import OUTPUT, check_target, objective_weights, parse_target

LAYOUT = {OUTPUT: (10,), "features.3": (16, 8, 8), "classifier.0": (32,)}


@pytest.mark.parametrize("text, canonical", [
    ("class:668", "class:668"),
    ("class:9+class:339", "class:9+class:339"),
    ("channel:features.28:17", "channel:features.28:17"),
    ("neuron:features.28:17:7:7", "neuron:features.28:17:7:7"),
    ("0.5*class:9", "0.5*class:9"),
    ("1.0*class:9 + 2*channel:features.3:1", "class:9+2*channel:features.3:1"),
    ("-0.25*class:1+class:2", "-0.25*class:1+class:2"),
])
def test_parse_canonical(text, canonical):
    target = parse_target(text)
    assert target.text == canonical
    assert parse_target(target.text) == target  # canonical text round-trips
    assert "/" not in target.id and ":" not in target.id


@pytest.mark.parametrize("text, fragment", [
    ("", "empty target"),
    ("class:", "cannot read"),
    ("class:-3", "non-negative integer"),
    ("class:abc", "non-negative integer"),
    ("klass:3", "cannot read"),
    ("channel:features.28", "not of the form channel:LAYER:C"),
    ("neuron:features.28:1:2", "not of the form neuron:LAYER:C:Y:X"),
    ("0*class:3", "finite non-zero"),
    ("class:3+class:3", "appears twice"),
    ("x*class:3", "cannot read"),
])
def test_parse_errors(text, fragment):
    with pytest.raises(UsageError, match=fragment) as err:
        parse_target(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, fragment", [
    ("class:10", "class 10 is outside the classifier, which has classes 0..9"),
    ("channel:features.9:0", "unknown layer 'features.9'; valid layers: features.3, classifier.0"),
    ("channel:features.3:16", "channels 0..15"),
    ("neuron:features.3:0:8:0", "positions y 0..7, x 0..7"),
    ("neuron:classifier.0:1:0:0", "no channels and positions"),
])
def test_range_errors(text, fragment):
    with pytest.raises(UsageError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        check_target(parse_target(text), LAYOUT)


def test_objective_weights():
    targets = [parse_target("class:3"), parse_target("0.5*class:1+class:2"),
               parse_target("channel:features.3:4"), parse_target("neuron:features.3:2:1:5")]
    w, penalty = objective_weights(targets, LAYOUT, lam=0.01)
    assert w[OUTPUT][0, 3] == 1 and w[OUTPUT][0].sum() == 1
    assert w[OUTPUT][1, 1] == 0.5 and w[OUTPUT][1, 2] == 1
    np.testing.assert_allclose(w["features.3"][2, 4], np.full((8, 8), 1 / 64))  # the channel mean
    assert w["features.3"][2].sum() == pytest.approx(1)
    assert w["features.3"][3, 2, 1, 5] == 1 and w["features.3"][3].sum() == 1
    np.testing.assert_array_equal(penalty, np.float32([0.01, 0.01, 0, 0]))  # lambda only for class targets
