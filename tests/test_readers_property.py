"""Property-based tests of every reader of a file or text a user (or an attacker) controls: random
bytes, random JSON and random nesting give a valid object or one UsageError line, never another
exception."""

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgn_engine.artifacts import load_artifacts
from dgn_engine.errors import UsageError
from dgn_engine.records import ManifestRecord, RunRecord, TargetRecord, parse_json, read_lines, validated
from dgn_engine.targets import ID_PREFIX, parse_target

MODELS = (ManifestRecord, RunRecord, TargetRecord)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=40,
)


def _one_line(error: UsageError) -> None:
    assert "\n" not in str(error) and str(error)


def _read(data: bytes, model) -> None:
    try:
        validated(parse_json(data, "f.json", "record"), model, "f.json", "record")
    except UsageError as e:
        _one_line(e)


@EXAMPLES
@given(st.binary(max_size=400))
def test_random_bytes_as_any_record(data):
    for model in MODELS:
        _read(data, model)


@EXAMPLES
@given(json_values)
def test_random_json_as_any_record(value):
    for model in MODELS:
        _read(json.dumps(value).encode(), model)


@EXAMPLES
@given(st.integers(1, 100_000), st.sampled_from(["[", '{"a":']))
def test_random_nesting(depth, opener):
    closer = "]" if opener == "[" else "}"
    _read((opener * depth + "1" + closer * depth).encode(), TargetRecord)


def _mutations():
    """A valid target record with one field replaced by random JSON."""
    return st.tuples(
        st.sampled_from(["target", "id", "name", "results_key", "png_sha256", "mode", "seed", "loss_curve", "top5"]),
        json_values,
    )


VALID_RECORD = {
    "target": "class:1",
    "id": "class-1",
    "name": "one",
    "results_key": "0123456789abcdef",
    "png_sha256": "0" * 64,
    "mode": "pixel",
    "seed": 0,
    "steps": 3,
    "loss_curve": [[0, 1.0, 2.0]],
    "seconds": 0.5,
    "top5": [{"class": 1, "name": "one", "score": 3.0}],
}


@EXAMPLES
@given(_mutations())
def test_a_valid_record_with_one_damaged_field(mutation):
    field, value = mutation
    _read(json.dumps({**VALID_RECORD, field: value}).encode(), TargetRecord)


@EXAMPLES
@given(st.text(max_size=120))
def test_random_target_texts(text):
    try:
        target = parse_target(text)
    except UsageError as e:
        _one_line(e)
        return
    assert parse_target(target.text).text == target.text  # canonical
    assert re.fullmatch(r"[\w.\-]+", target.id, re.ASCII) and len(target.id) <= ID_PREFIX + 13
    assert not target.id.startswith((".", "-"))


@EXAMPLES
@given(
    st.lists(st.sampled_from(["class:1", "0.5*class:2", "channel:a.b:3", "neuron:x:1:2:3"]), min_size=1, unique=True)
)
def test_distinct_targets_have_distinct_file_names(terms):
    texts = {"+".join(terms), "+".join(reversed(terms)), "+".join(terms[:1])}
    parsed = {parse_target(t).text: parse_target(t).id for t in texts}
    assert len(set(parsed.values())) == len(parsed)
    assert len({i.lower() for i in parsed.values()}) == len(parsed)  # also on a case-insensitive disk


@EXAMPLES
@given(st.binary(max_size=300))
def test_random_labels_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_bytes(data)
    try:
        lines = read_lines(str(path), "labels file")
    except UsageError as e:
        _one_line(e)
        return
    assert all(line == line.strip() and line for line in lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["batch", "layout", "state", "plan", "graphs", "files", "num_classes", "preprocessing", "spec"]),
    json_values,
)
def test_a_manifest_with_one_damaged_field(tmp_path_factory, artifacts, field, value):
    """A real manifest with one field replaced by random JSON loads, or is refused in one line."""
    folder = tmp_path_factory.mktemp("art")
    source = artifacts["pretrained"]
    for name in os.listdir(source.path):
        if name != ".lock":
            os.link(os.path.join(source.path, name), folder / name)
    manifest = dict(source.manifest, **{field: value})
    os.unlink(folder / "manifest.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        load_artifacts(str(folder))
    except UsageError as e:
        _one_line(e)
