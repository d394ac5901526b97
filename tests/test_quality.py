"""The quality benchmark on the demo (bench/quality.py) at a small step count, and its judges."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import quality  # noqa: E402

from dgn_engine import demo  # noqa: E402
from dgn_engine.exporter.classifiers import load_classifier  # noqa: E402
from tests.conftest import error_line  # noqa: E402

pytestmark = pytest.mark.quality


def test_judges_are_other_trained_classifiers():
    """Shipped, loadable by name, of other architectures than D, and trained: their own card's test
    accuracy, and agreement with D on D's preferred inputs is not by construction."""
    card = json.load(open(demo.path("judges.json")))
    d = load_classifier(demo.NAME).module
    for name in ("resnet", "mlp"):
        judge = load_classifier(f"dgn_engine.exporter.demo_judges:{name}")
        assert judge.preprocessing == demo.PREPROCESSING
        assert type(judge.module) is not type(d) and card[name]["test_accuracy"] > 0.85
        assert card[name]["seed"] != 0  # D's seed


def test_quality_table_on_the_demo(tmp_path, capsys):
    out = tmp_path / "q.json"
    argv = ["--modes", "pixel", "--classes", "4", "--steps", "20", "--out", str(tmp_path / "runs")]
    assert quality.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["mode"], r["transforms"]) for r in rows] == [("pixel", "standard")]  # the mode's default
    for r in rows:
        assert r["targets"] == 4 and r["steps"] == 20 and r["seconds_per_target"] > 0
        shares = [r[k] for k in r if k.endswith(("_top1", "_top5"))] + [r["d_probability"]]
        assert len(shares) == 6 and all(0 <= s <= 1 for s in shares)
        assert r["resnet_top1"] <= r["resnet_top5"] and r["mlp_top1"] <= r["mlp_top5"]
    # the classes are spread over D's, and D's top-1 share agrees with what the run recorded on the PNGs
    folder = tmp_path / "runs" / "pixel-default-seed0" / "targets"
    records = [json.load(open(folder / f)) for f in sorted(os.listdir(folder)) if f.endswith(".json")]
    assert sorted(r["target"] for r in records) == ["class:0", "class:3", "class:6", "class:9"]
    assert np.isclose(rows[0]["d_top1"], np.mean([r["top1_is_target"] for r in records]))
    assert "resnet top-1/5" in capsys.readouterr().out


def test_quality_bad_input(tmp_path, capsys):
    base = ["bench", "--quality", "--out", str(tmp_path / "q")]
    assert "--seeds" in error_line(capsys, [*base, "--seeds", "a,1"])
    assert "transforms must be none, standard" in error_line(capsys, [*base, "--transforms", "none,sideways"])
    assert "unknown value 'dream'" in error_line(capsys, [*base, "--modes", "dream"])
    err = error_line(capsys, [*base, "--judge", "tests.small_models:tiny_rgb"])
    assert err.endswith("judge 'tests.small_models:tiny_rgb' takes RGB images, D makes L")
