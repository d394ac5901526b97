"""One road from a request to its results (session.py): the CLI and the Python API build the same
Request, so they share their defaults, their refusals and their results; a run builds its spec once,
parses each target once, loads D once and never calls back up a layer."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

import dgn_engine as dgn
from dgn_engine.arguments import ArgumentError
from dgn_engine.cli.main import main
from dgn_engine.session import ClassifierChoice, GeneratorChoice, Request, default_batch, default_mode
from tests.conftest import error_line
from tests.small_models import tiny_rgb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _road():
    spec = importlib.util.spec_from_file_location("road", os.path.join(ROOT, "tools", "road.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_one_rule_for_the_defaults():
    assert default_mode("demo") == "pretrained"  # it ships its decoder
    assert default_mode("net.onnx") == "untrained" and default_mode(tiny_rgb()) == "untrained"
    assert default_mode("net.onnx", decoder="d.pt") == "pretrained"
    assert [default_batch(n) for n in (1, 8, 9, 10, 17, 24)] == [1, 8, 5, 5, 6, 8]  # equal, at most 8
    assert default_batch(2, is_demo=True) == 5
    # on a CPU, inputs of 128 px and more: equal batches of at most 4; smaller inputs keep 8
    assert [default_batch(n, cpu_input_size=224) for n in (1, 4, 5, 9, 16)] == [1, 4, 3, 3, 4]
    assert default_batch(8, cpu_input_size=32) == 8


def test_which_devices_take_the_cpu_batches():
    import onnxruntime

    from dgn_engine.session import _runs_on_cpu

    assert _runs_on_cpu("cpu") and not _runs_on_cpu("cuda")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert _runs_on_cpu("auto")  # onnxruntime without CUDA runs on the CPU


@pytest.mark.slow  # two exports (the factory's and the module's): 19 s
def test_the_cli_runs_a_classifier_on_its_cached_export_as_the_api_does(tmp_path, cache, capsys):
    """`run --classifier` on the step graph exports once into the cache, as synthesize does, and writes
    the image synthesize returns, pixel for pixel (same weights, settings and default batch)."""
    argv = ["run", "--classifier", "tests.small_models:tiny_rgb", "--mode", "pixel", "--steps", "4", "--seed", "2"]
    argv.append("--quiet")  # pixel mode: no G, a quick export
    assert main([*argv, "--target", "class:3", "--target", "class:5", "--out", str(tmp_path / "o")]) == 0
    assert "exporting this classifier's pixel mode to ONNX, once" in capsys.readouterr().out
    [folder] = list((cache / "exports").iterdir())
    assert json.loads((folder / "manifest.json").read_text())["batch"] == 2  # both targets in one step
    assert main([*argv, "--target", "class:3", "--target", "class:5", "--out", str(tmp_path / "again")]) == 0
    assert "exporting" not in capsys.readouterr().out and len(list((cache / "exports").iterdir())) == 1
    ours = dgn.synthesize(tiny_rgb(), ["class:3", "class:5"], mode="pixel", steps=4, seed=2, progress=False)
    for r, name in zip(ours, ("class-3", "class-5")):
        png = np.asarray(Image.open(tmp_path / "o" / "targets" / f"{name}.png"))
        np.testing.assert_array_equal(r.array, png)


def test_a_refusal_reads_the_same_from_both(tmp_path, capsys):
    """One check between choices, named as each caller names them."""
    cli = error_line(capsys, ["run", "--target", "class:1", "--workers", "2", "--out", str(tmp_path / "o")])
    assert "--workers sets how many Ray workers run the batches; add --ray" in cli
    with pytest.raises(ArgumentError) as caught:
        dgn.synthesize("demo", "class:1", workers=2)
    assert "synthesize(workers=2): workers sets how many Ray workers run the batches; add ray=True" in str(caught.value)
    assert not (tmp_path / "o").exists()


def test_a_request_names_its_own_choices():
    """A Request is frozen data: what a call asked, nothing decided yet."""
    r = Request(ClassifierChoice("demo", image_size=32), GeneratorChoice("pixel"), {"steps": 3}, caller="synthesize")
    with pytest.raises(AttributeError):
        r.caller = "other"
    assert r.d.image_size == 32 and r.g.mode == "pixel" and r.method == {"steps": 3}


def test_a_run_builds_one_spec_parses_each_target_once_and_never_climbs(tmp_path, artifacts):
    """Measured from real runs (tools/road.py traces every call between the package's modules)."""
    road = _road()
    torch_run = road.measure(
        [
            "run",
            "--backend",
            "torch",
            "--classifier",
            "tests.small_models:tiny_rgb",
            "--target",
            "class:3",
            "--target",
            "channel:features.3:2",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "t"),
            "--quiet",
        ]
    )
    assert torch_run["exit"] == 0 and torch_run["parses per target"] == 1
    assert torch_run["counts"] == {"specs built": 1, "classifiers loaded by name or file": 1}
    # the torch reference is the exporter's step run eagerly: its one way up, by design
    assert {callee.split(".")[1] for caller, callee in torch_run["climbs"]} <= {"exporter"}
    assert all(caller == "dgn_engine.engine.backends.torch_reference" for caller, _ in torch_run["climbs"])
    art = artifacts["untrained"]
    graph_run = road.measure(
        ["run", "--artifacts", art.path, "--target", "class:3", "--steps", "2", "--out", str(tmp_path / "g"), "--quiet"]
    )
    assert graph_run["exit"] == 0 and graph_run["parses per target"] == 1
    assert graph_run["counts"] == {"specs built": 1} and graph_run["climbs"] == []


def test_the_demo_runs_its_shipped_artifacts_where_the_cache_cannot_be_written(tmp_path, monkeypatch, capsys):
    """They are the export the run would make (the same results digest), so the results are the same."""
    import os

    from dgn_engine import demo

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(cache))
    real = os.access  # read-only as any user sees it (root writes anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(cache) else real(p, mode, **kw))
    out = tmp_path / "o"
    assert main(["run", "--target", "class:1", "--steps", "3", "--out", str(out), "--quiet"]) == 0
    assert "exporting" not in capsys.readouterr().out and os.listdir(cache) == []
    made = json.loads((out / "run.json").read_text())
    assert json.dumps(made).count(os.path.realpath(demo.shipped_artifacts("pretrained"))) >= 1
