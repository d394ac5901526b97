"""The training-API backend (onnxruntime-training 1.19.2): parity, its traps, and the CLI around it.

These run in the environment that has onnxruntime-training (.ci/run builds it; see the README);
elsewhere they skip, except the checks that a missing onnxruntime-training gives one clear line.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from dgn_engine.cli.main import main
from dgn_engine.engine.loop import run_batch
from dgn_engine.spec import default_spec
from dgn_engine.targets import parse_target
from tests.conftest import error_line, export


def _has_training_api() -> bool:
    """Only the one error that says the training API is missing means a skip."""
    from dgn_engine.engine.backends.training_api import training_bindings
    from dgn_engine.errors import UsageError

    try:
        training_bindings()
        return True
    except UsageError as e:
        if "has no training API" not in str(e) and "needs onnxruntime" not in str(e):
            raise
        return False


HAS_TRAINING = _has_training_api()
needs_training = pytest.mark.skipif(
    not HAS_TRAINING, reason="onnxruntime-training is not installed here (its own environment: see the README)"
)
BOTH = ("--backend", "step-graph", "--backend", "training-api")


@pytest.fixture(scope="module")
def both(tmp_path_factory, decoder_file):
    """Batch-3 artifacts of the tiny classifier (features.3 tapped) for both backends, both modes."""
    if not HAS_TRAINING:
        pytest.skip("onnxruntime-training is not installed here")
    root = tmp_path_factory.mktemp("both")
    return {
        mode: export(root / mode, mode, 3, decoder_file, "--taps", "features.3", *BOTH)
        for mode in ("untrained", "pretrained")
    }


def _backend(art, name="training-api"):
    from dgn_engine.engine.backends import engine_backend

    return engine_backend(name, art, "cpu")


@needs_training
@pytest.mark.parametrize("mode", ["untrained", "pretrained"])
def test_matches_float64_reference(both, mode):
    """Each of 6 steps, started from float64's state: onnxruntime's own autodiff plus our numpy update
    within verify's tolerance (5x torch float32's own error against float64, floor 1e-4)."""
    from dgn_engine.exporter.verify import verify

    art = both[mode]
    ok, report = verify(art, 6, "cpu", log=lambda *_: None, engine_backends=[_backend(art)])
    assert ok, report
    # and in absolute terms, as for the step graph: the loss to 1e-5, the state's change to 1e-3
    assert report["training-api"]["loss"] < 1e-5
    assert report["training-api"]["state"] < 1e-3


@needs_training
@pytest.mark.parametrize("mode, steps", [("untrained", 3), ("pretrained", 5)])
def test_same_results_as_the_step_graph(both, mode, steps):
    """Same seed, targets and steps on both backends. Two float32 implementations of one step differ
    by rounding only, but rounding compounds: AdaMax turns sign noise in near-zero gradients into
    lr-sized moves, so untrained mode is compared over 3 steps (as batching is). In pretrained mode
    the paths agree to ~1e-6 for some steps, then part abruptly, as when a ReLU input lies within
    rounding of 0 and the two implementations take its mask differently (each such flip changes the
    gradient by that unit's share). Where they part depends on the environment's rounding: step 13
    with the packages of an earlier CI, step 8 with numpy 2.4.6 and the same onnxruntime-training
    1.19.2 (also on the code before the any-classifier change). So it is compared over 5 steps;
    `verify` checks every step from float64's state."""
    art = both[mode]
    targets = [parse_target(t) for t in ("class:4", "0.5*class:2+class:7", "channel:features.3:5")]
    spec = default_spec(mode, steps=steps)
    ours = run_batch(_backend(art), targets, spec)
    graph = run_batch(_backend(art, "step-graph"), targets, spec)
    for a, b in zip(ours, graph):
        np.testing.assert_allclose(np.array(a.curve), np.array(b.curve), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.image, b.image, rtol=1e-4, atol=1e-4)


# -- the traps of onnxruntime-training 1.19.2, one test each ---------------------------------------


def _training_graph(art) -> onnx.ModelProto:
    return onnx.load(art.graph("training"), load_external_data=False)


@needs_training
def test_graph_versions_are_ones_it_loads(both):
    """It loads opset <= 21 and IR <= 10 only."""
    for art in both.values():
        model = _training_graph(art)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert opset <= 21 and model.ir_version <= 10


@needs_training
def test_too_new_onnx_is_refused_in_one_line(monkeypatch):
    """onnx newer than 1.17 writes IR versions it refuses: export says so before any work."""
    from dgn_engine.errors import UsageError
    from dgn_engine.exporter import training_api

    monkeypatch.setattr(training_api.onnx, "__version__", "1.23.0")
    with pytest.raises(UsageError, match="onnx==1.17.0"):
        training_api.training_api()


@needs_training
def test_no_resize_and_no_auto_pad(both):
    """No CPU gradient for Resize: G upsamples with expand. ConvGrad ignores auto_pad (SAME_UPPER gives
    >100 % gradient error, measured, for every kernel size) but is exact with explicit pads, even
    asymmetric ones (k=4 "same": 1 before, 2 after), which the test plan has, so parity exercises them."""
    for art in both.values():
        assert any(c.k % 2 == 0 and c.pads[0] != c.pads[1] for c in art.plan.convs())
        model = _training_graph(art)
        assert not {n.op_type for n in model.graph.node} & {"Resize", "ResizeGrad", "Upsample"}
        for node in model.graph.node:
            if node.op_type in ("Conv", "ConvGrad"):
                auto = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET")
                assert auto == "NOTSET", (node.name, auto)


@needs_training
def test_trainables_are_parameters_not_graph_inputs(both):
    """A gradient w.r.t. a graph input fails at run time: alpha (and all of G in untrained mode) are
    checkpoint parameters; the graph's own inputs are only noise, weights, penalty and settings."""
    from onnxruntime.capi import _pybind_state as C

    from dgn_engine.state import trainable_shapes

    for art in both.values():
        names = set(C.load_checkpoint(os.path.join(art.path, "checkpoint")).parameter_names())
        assert names == set(trainable_shapes(art.mode, art.plan)) and "alpha" in names
        feeds = {i["name"] for i in art.manifest["graphs"]["training"]["inputs"]}
        assert feeds == {"noise", "hyper", "penalty", "weight.output", "weight.features.3"}


@needs_training
def test_no_batchnorm_node_and_no_eval_model(both):
    """A training-mode BatchNormalization breaks the eval model: G's BatchNorm is plain arithmetic
    (batch statistics in untrained mode, running statistics in pretrained mode) and no eval model
    is written or loaded."""
    for art in both.values():
        assert "BatchNormalization" not in {n.op_type for n in _training_graph(art).graph.node}
        assert not [f for f in os.listdir(art.path) if "eval" in f]


@needs_training
def test_runtime_never_imports_torch(tmp_path, both):
    """`import onnxruntime` of the training build tries to import torch; the engine hides it."""
    code = (
        "import sys; from dgn_engine.cli.main import main; "
        f"rc = main(['run', '--artifacts', {both['pretrained'].path!r}, '--backend', 'training-api', "
        f"'--target', 'class:1', '--steps', '4', '--out', {str(tmp_path / 'r')!r}, '--quiet']); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; print('OK')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


# -- the commands ----------------------------------------------------------------------------------


@needs_training
def test_run_resume_and_verify_commands(tmp_path, both, capsys):
    art = both["untrained"]
    argv = [
        "run",
        "--artifacts",
        art.path,
        "--backend",
        "training-api",
        "--all-classes",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    ]
    assert main(argv) == 0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["backend"]["backend"] == "training-api" and run["progress"]["done"] == 10
    assert len(list((tmp_path / "r" / "targets").glob("*.png"))) == 10
    assert (tmp_path / "r" / "index.html").is_file()
    capsys.readouterr()
    assert main(argv) == 0  # a second run finds everything done
    assert "nothing to do" in capsys.readouterr().out
    assert main(["verify", "--artifacts", art.path, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "step-graph" in out and "training-api" in out
    assert main(["verify", "--no-torch", "--artifacts", art.path]) == 0
    out = capsys.readouterr().out
    assert "step-graph backend" in out and "training-api backend" in out


@needs_training
def test_backend_must_be_in_the_artifacts(tmp_path, capfd, decoder_file):
    art = export(tmp_path / "ta", "pretrained", 1, decoder_file, "--backend", "training-api")
    assert art.backends == ["training-api"]
    assert "[I:onnxruntime" not in capfd.readouterr().err  # the gradient builder's log stays hidden
    err = error_line(
        capfd,
        [
            "run",
            "--artifacts",
            art.path,
            "--backend",
            "step-graph",
            "--target",
            "class:1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "--backend step-graph" in err
    err = error_line(
        capfd, ["run", "--artifacts", art.path, "--device", "cuda", "--target", "class:1", "--out", str(tmp_path / "r")]
    )
    assert "onnxruntime-training==1.19.2" in err
    with open(art.graph("training"), "r+b") as f:  # a damaged training model
        f.truncate(1000)
    err = error_line(capfd, ["run", "--artifacts", art.path, "--target", "class:1", "--out", str(tmp_path / "r")])
    assert "has 1000 bytes, the export wrote" in err and "export the artifacts again" in err


@pytest.mark.skipif(HAS_TRAINING, reason="checks the messages where onnxruntime-training is missing")
def test_missing_training_api_is_one_line(tmp_path, capsys, artifacts):
    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            "tests.small_models:tiny_rgb",
            "--mode",
            "untrained",
            "--backend",
            "training-api",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert "onnxruntime-training" in err
    # training-api artifacts (made elsewhere) in an environment without onnxruntime-training
    art = tmp_path / "made-elsewhere"
    shutil.copytree(artifacts["pretrained"].path, art)
    manifest = json.loads((art / "manifest.json").read_text())
    empty = {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    manifest["graphs"]["training"] = {"file": "training.onnx", "inputs": [], "outputs": []}
    manifest["files"].update({"training.onnx": empty, "checkpoint": empty})
    (art / "manifest.json").write_text(json.dumps({**manifest, "backends": ["training-api"]}))
    (art / "training.onnx").write_bytes(b"")
    (art / "checkpoint").write_bytes(b"")
    err = error_line(capsys, ["run", "--artifacts", str(art), "--target", "class:1", "--out", str(tmp_path / "r")])
    assert "dgn-engine[training-api]" in err
    err = error_line(capsys, ["verify", "--artifacts", str(art)])
    assert "none of the backends" in err
    err = error_line(capsys, ["run", "--backend", "training-api", "--all-classes", "--out", str(tmp_path / "d")])
    assert "dgn-engine[training-api]" in err  # the demo: said before any export work


@needs_training
def test_an_op_without_a_training_gradient_is_named(tmp_path, capsys):
    """onnxruntime-training has no gradient for ReduceMax (the Inception-shaped net's adaptive max
    pooling): one line names the op and points to the step-graph backend, which takes the net."""
    from tests.conftest import error_line

    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            "tests.zoo:inception",
            "--mode",
            "untrained",
            "--backend",
            "training-api",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert "no gradient for the ONNX op ReduceMax" in err and "step-graph" in err


@needs_training
@pytest.mark.parametrize("name", ["vit", "densenet"])
def test_transformer_and_pre_activation_classifiers(tmp_path, name):
    """Two traps of the gradient builder, each a net family: a ViT (LayerNorms sharing equal freshly
    initialised weights, which the tracer merges into one initializer; torch.onnx's LayerNormalization
    without its optional outputs) and a DenseNet (BatchNorm before the conv, so not folded into it,
    which onnxruntime-training would turn into batch-statistics BatchNorm: another D). Each step
    matches float64 within verify's tolerance (the DenseNet's loss was 29% off before)."""
    from dgn_engine.artifacts import load_artifacts
    from dgn_engine.exporter.verify import verify

    assert (
        main(
            [
                "export",
                "--classifier",
                f"tests.zoo:{name}",
                "--mode",
                "untrained",
                "--backend",
                "training-api",
                "--out",
                str(tmp_path / "art"),
            ]
        )
        == 0
    )
    art = load_artifacts(str(tmp_path / "art"))
    ok, report = verify(art, 2, "cpu", log=lambda *_: None, engine_backends=[_backend(art)])
    assert ok, report


@needs_training
def test_onnx_file_as_d_says_where_it_converts(tmp_path, capsys):
    """onnx2fx needs onnx >= 1.19.1, onnxruntime-training 1.19 pins onnx 1.17: one line says which
    environment converts an ONNX file (and the other forms D can take)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "d",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    err = error_line(
        capsys,
        [
            "export",
            "--classifier",
            str(path),
            "--mode",
            "untrained",
            "--backend",
            "training-api",
            "--out",
            str(tmp_path / "art"),
        ],
    )
    assert "onnxruntime-training environment" in err and "step-graph" in err and "TorchScript" in err


@needs_training
def test_synthesize_with_the_training_api(tmp_path, monkeypatch):
    """The Python API's backend="training-api": its own export, and the step graph's images (the
    comparison above, here over 3 untrained steps through dgn.synthesize)."""
    import dgn_engine as dgn

    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    settings = dict(mode="untrained", steps=3, seed=2, progress=False, transforms="none")
    ours = dgn.synthesize("tests.small_models:tiny_rgb", ["class:4", "class:7"], backend="training-api", **settings)
    graph = dgn.synthesize("tests.small_models:tiny_rgb", ["class:4", "class:7"], **settings)
    assert [r.record["backend"] for r in ours] == ["training-api"] * 2
    for a, b in zip(ours, graph):
        # PNG bytes of images within 1e-4 of each other: at most one grey level apart
        assert np.abs(a.array.astype(int) - b.array.astype(int)).max() <= 1
