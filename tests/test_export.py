"""Export: the ONNX step graph against the float64 torch reference, batching, determinism, errors."""

import hashlib
import json
import os

import numpy as np
import onnx
import pytest

from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.cost import assign_roles
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.loop import run_batch
from dgn_engine.errors import UsageError
from dgn_engine.exporter.verify import verify
from dgn_engine.spec import default_spec
from dgn_engine.targets import parse_target
from tests.conftest import error_line, export
from tests.small_models import write_calibrated_decoder

SMALL = ["--classifier", "tests.small_models:tiny_rgb"]


@pytest.mark.parametrize("mode", ["untrained", "pretrained"])
def test_step_graph_matches_float64_reference(artifacts, mode):
    """Each of 6 steps, started from float64's state, is as exact in onnxruntime as float32 torch
    allows: verify's tolerance is 5x torch float32's own error against float64, floor 1e-4."""
    art = artifacts[mode]
    ok, report = verify(art, 6, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert ok, report
    # and in absolute terms: the loss of every step to 1e-5, the state's change to 1e-3
    assert report["step-graph"]["loss"] < 1e-5
    assert report["step-graph"]["state"] < 1e-3


@pytest.mark.slow  # an export of its own
def test_weight_gradients_as_products_match_float64(tmp_path, monkeypatch):
    """G's weight gradients on the batched-MatMul path (taken by a 224 px G's layers; forced here on the
    tiny model's G by lowering the work threshold), two generators as groups, through onnxruntime:
    verify's tolerance, as for the convolution path above."""
    from dgn_engine.kernels import decompositions

    monkeypatch.setattr(decompositions, "MATMUL_MIN_FLOPS", 0)
    art = export(tmp_path / "art", "untrained", 2)
    graph = onnx.load(art.graph("step"), load_external_data=False).graph
    weight_gradient_ops = [n.op_type for n, role in zip(graph.node, assign_roles(graph)) if role == "weight gradient"]
    assert "Conv" not in weight_gradient_ops and weight_gradient_ops.count("MatMul") >= 9  # a 3x3 layer's at least
    ok, report = verify(art, 4, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert ok, report
    assert report["step-graph"]["loss"] < 1e-5 and report["step-graph"]["state"] < 1e-3


def test_verify_command(artifacts, capsys):
    assert main(["verify", "--artifacts", artifacts["pretrained"].path, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "torch-float32" in out and "step-graph" in out and "tolerance" in out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["untrained", "pretrained"])
def test_batch_equals_single_runs(tmp_path, artifacts, decoder_file, mode):
    """K targets in one graph (rows, or grouped generators) = K runs of a batch-1 graph."""
    single = export(tmp_path / "k1", mode, 1, decoder_file, "--taps", "features.3")
    targets = [parse_target(t) for t in ("class:4", "0.5*class:2+class:7", "channel:features.3:5")]
    spec = default_spec(mode, steps=3)
    batched = run_batch(StepGraphBackend(artifacts[mode], "cpu"), targets, spec)
    one_by_one = [run_batch(StepGraphBackend(single, "cpu"), [t], spec)[0] for t in targets]
    for a, b in zip(batched, one_by_one):
        # float32, different convolution batchings: rounding only; 3 steps, before AdaMax/Nesterov compound it
        np.testing.assert_allclose(np.array(a.curve), np.array(b.curve), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.image, b.image, rtol=1e-4, atol=1e-4)


def test_short_batch_is_padded(artifacts):
    spec = default_spec("pretrained", steps=3)
    out = run_batch(StepGraphBackend(artifacts["pretrained"], "cpu"), [parse_target("class:1")], spec)
    assert len(out) == 1 and out[0].image.shape == (3, 32, 32)


def test_only_standard_onnx_domains(artifacts):
    for art in artifacts.values():
        for name in ("step", "render", "classifier"):
            model = onnx.load(art.graph(name), load_external_data=False)
            assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, name
            assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}, name


@pytest.mark.slow
def test_export_twice_gives_the_same_graph(tmp_path, artifacts, decoder_file):
    again = export(tmp_path / "again", "untrained", 3, decoder_file, "--taps", "features.3")
    for f in ("step.onnx", "render.onnx", "classifier.onnx", "weights.bin"):
        assert (
            open(os.path.join(again.path, f), "rb").read()
            == open(os.path.join(artifacts["untrained"].path, f), "rb").read()
        ), f


def test_manifest(artifacts, decoder_file):
    m = artifacts["pretrained"].manifest
    assert m["format_version"] == 4 and m["backends"] == ["step-graph"]
    assert m["mode"] == "pretrained" and m["batch"] == 3
    assert m["taps"] == ["features.3"] and m["layout"]["features.3"] == [16, 16, 16]
    assert m["num_classes"] == 10 and m["trainable_per_target"] == artifacts["pretrained"].plan.features
    assert os.path.abspath(decoder_file) in m["sha256"] and len(m["sha256"][os.path.abspath(decoder_file)]) == 64
    assert set(m["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert m["preprocessing"]["image_size"] == 32
    step = m["graphs"]["step"]
    assert [i["name"] for i in step["inputs"]][:3] == ["alpha", "v.alpha", "t"]
    assert [o["name"] for o in step["outputs"]][-3:] == ["loss", "activation", "image"]
    u = artifacts["untrained"].manifest
    assert u["trainable_per_target"] == artifacts["untrained"].plan.trainable_count()
    # every file but the manifest, with the size and digest it was written with
    path = artifacts["pretrained"].path
    assert set(m["files"]) == set(os.listdir(path)) - {"manifest.json", ".lock"}  # the lock is no artifact
    for f, entry in m["files"].items():
        data = open(os.path.join(path, f), "rb").read()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_unknown_format_version_refused(tmp_path, artifacts):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(artifacts["pretrained"].path, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UsageError, match="format version 99"):
        load_artifacts(str(copy))


def test_export_bad_input(tmp_path, capsys, artifacts):
    base = ["export", *SMALL, "--mode", "untrained"]
    assert "argument --batch: must be between 1 and 4,096" in error_line(
        capsys, base + ["--batch", "0", "--out", str(tmp_path / "a")]
    )
    err = error_line(capsys, base + ["--taps", "features.77", "--out", str(tmp_path / "b")])
    assert "unknown layer 'features.77'; valid layers: features, features.0" in err  # blocks and leaves
    err = error_line(capsys, base + ["--out", artifacts["untrained"].path])
    assert "already holds artifacts; use --force" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "holds 'notes.txt', which an export did not write" in error_line(
        capsys, base + ["--out", str(tmp_path / "busy")]
    )
    # --force replaces artifacts, never anyone else's files
    err = error_line(capsys, base + ["--out", str(tmp_path / "busy"), "--force"])
    assert "which an export did not write" in err and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    gray = str(tmp_path / "gray.pt")
    write_calibrated_decoder(gray, 28, "L")
    err = error_line(
        capsys, ["export", *SMALL, "--mode", "pretrained", "--decoder", gray, "--out", str(tmp_path / "c")]
    )
    assert "makes 1x28x28 images; the classifier takes 3x32x32" in err
