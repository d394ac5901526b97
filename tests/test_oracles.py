"""Oracles shown to fail: `verify`, `selfcheck` and the zoo's engine-against-reference check each fed
a step graph made wrong as an exporter bug would make it, in D's backward only (the forward pass, the
image and the loss stay right)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dgn_engine.artifacts import load_artifacts
from dgn_engine.digests import sha256_file
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck
from dgn_engine.exporter.verify import verify
from dgn_engine.targets import parse_target
from tests.conftest import export
from tests.test_zoo import _engine_equals_reference


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return export(tmp_path_factory.mktemp("good") / "art", "untrained", 2, None, "--taps", "features.3")


def _backward_kernels(arrays: dict, forward_kernels: list) -> dict[str, str]:
    """{constant: forward kernel} for the step graph's constants that are one of D's conv kernels (as
    classifier.onnx holds them) with in and out channels swapped and turned by 180 degrees: what the
    gradient of D's input passes through."""
    kernels = {n: a for n, a in arrays.items() if a.ndim == 4}
    forward = {n: a for n, a in kernels.items() if any(np.array_equal(a, k) for k in forward_kernels)}
    return {
        b: a
        for b, wb in kernels.items()
        for a, wa in forward.items()
        if b not in forward
        and wb.shape == wa.shape[1::-1] + wa.shape[2:]
        and np.array_equal(wb, wa.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    }


def _unflipped(arrays, backward, forward):
    """The classic transposed-convolution bug: channels swapped but the kernel not turned."""
    return arrays[forward].transpose(1, 0, 2, 3).copy()


def _a_few_percent_off(arrays, backward, forward):
    """3% of the kernel's norm added in a random direction: the gradient off by a few percent, in a
    direction unrelated to it."""
    noise = np.random.default_rng(0).standard_normal(arrays[backward].shape)
    return (arrays[backward] + 0.03 * np.linalg.norm(arrays[backward]) * noise / np.linalg.norm(noise)).astype(
        np.float32
    )


def tampered(art, folder, how):
    """A copy of the artifacts whose step graph has D's middle backward kernel changed by `how`, with
    the manifest's digest of the graph brought up to date (as a buggy export would write it)."""
    shutil.copytree(art.path, folder, ignore=shutil.ignore_patterns(".lock"))
    path = folder / "step.onnx"
    model = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    d = onnx.load(str(folder / "classifier.onnx"))
    backward = _backward_kernels(arrays, [numpy_helper.to_array(i) for i in d.graph.initializer])
    assert len(backward) == 3, backward  # one per conv layer of the tiny classifier
    name = sorted(backward)[1]
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(how(arrays, name, backward[name]), name))
    onnx.save(model, str(path))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["step.onnx"] = {"sha256": sha256_file(str(path)), "size": path.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return load_artifacts(str(folder))


def _dropped_penalty(monkeypatch):
    """The lambda term of the loss left out of the step (fed no penalty weights)."""
    real = StepGraphBackend.start
    monkeypatch.setattr(
        StepGraphBackend, "start", lambda self, targets, spec: real(self, targets, replace(spec, lam=0.0))
    )


WRONG = {"unflipped kernel": _unflipped, "3% off": _a_few_percent_off, "dropped penalty": None}


def _wrong(good, tmp_path, monkeypatch, wrong):
    if WRONG[wrong] is None:
        _dropped_penalty(monkeypatch)
        return good
    return tampered(good, tmp_path / "wrong", WRONG[wrong])


def test_the_good_graph_passes_every_oracle(good):
    ok, report = verify(good, 2, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(good, "cpu")])
    assert ok, report
    assert selfcheck(good, log=lambda *_: None)


@pytest.mark.parametrize("wrong", WRONG)
def test_verify_refuses(good, tmp_path, monkeypatch, wrong):
    art = _wrong(good, tmp_path, monkeypatch, wrong)
    ok, report = verify(art, 2, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert not ok, report


@pytest.mark.parametrize("wrong", WRONG)
def test_engine_against_reference_refuses(good, tmp_path, monkeypatch, wrong):
    art = _wrong(good, tmp_path, monkeypatch, wrong)
    with pytest.raises(AssertionError):
        _engine_equals_reference(art, [parse_target("class:3"), parse_target("channel:features.3:1")])


# 3% off in a random direction is beyond float32 finite differences (selfcheck's own docstring says
# why); verify, against float64 autograd, is the check that sees it
@pytest.mark.parametrize("wrong", ["unflipped kernel", "dropped penalty"])
def test_selfcheck_refuses(good, tmp_path, monkeypatch, wrong):
    assert not selfcheck(_wrong(good, tmp_path, monkeypatch, wrong), log=lambda *_: None)
