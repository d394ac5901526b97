"""The embedded demo: it runs end to end from a fresh install, and its shipped artifacts are current."""

import json
import os

import onnx
import pytest

from dgn_engine import demo
from dgn_engine.artifacts import load_artifacts
from dgn_engine.cli.main import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# the README's first command (pretrained) in the quick tier; untrained (21 s here) in the slow one
@pytest.mark.parametrize("mode", ["pretrained", pytest.param("untrained", marks=pytest.mark.slow)])
def test_demo_end_to_end(tmp_path, cache, capsys, mode):
    """The README's first command, on fewer steps: exports into the cache, runs all ten classes."""
    out = tmp_path / "results"
    argv = ["run", "--all-classes", "--out", str(out), "--steps", "40", "--quiet"]
    assert main(argv + (["--mode", mode] if mode == "untrained" else [])) == 0
    printed = capsys.readouterr().out
    assert "exporting the embedded demo" in printed and "index.html" in printed
    names = sorted(json.loads((out / "targets" / f"class-{c}.json").read_text())["name"] for c in range(10))
    assert names == sorted(demo.labels())
    assert (out / "index.html").is_file() and (out / "sheet-001.png").is_file()
    assert any(cache.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_shipped_artifacts_equal_a_fresh_export(tmp_path, mode):
    from dgn_engine.exporter.manifest import export_demo

    fresh = export_demo(mode, str(tmp_path / mode), log=lambda *_: None)
    shipped = load_artifacts(demo.shipped_artifacts(mode))
    for f in ("step.onnx", "render.onnx", "classifier.onnx", "weights.bin"):
        a, b = os.path.join(fresh.path, f), os.path.join(shipped.path, f)
        assert open(a, "rb").read() == open(b, "rb").read(), (
            f"{f} is stale: run python tools/train_demo.py --artifacts-only"
        )
    volatile = ("export_seconds", "versions")
    assert {k: v for k, v in fresh.manifest.items() if k not in volatile} == {
        k: v for k, v in shipped.manifest.items() if k not in volatile
    }
    onnx.checker.check_model(shipped.graph("step"))


def test_model_card():
    """The card's text says what training.json says (the accuracy measured: test_quality.py)."""
    card = json.loads(open(demo.path("training.json")).read())
    assert card["decoder_heldout_mse"] < 0.5
    text = open(demo.path("MODEL_CARD.md")).read()
    assert f"{card['test_accuracy']:.2%}" in text and "held-out" in text
