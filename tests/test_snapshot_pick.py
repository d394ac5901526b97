"""What is written: with pick "best" the PNG is the candidate (kept snapshots and their median) that D
scores highest, scored as the PNG's own pixels, so D's verdict on the file is the verdict at the pick."""

import json

import numpy as np
import pytest

import dgn_engine as dgn
from tests.small_models import tiny_rgb

SETTINGS = dict(mode="untrained", steps=12, seed=3, snapshots=6, keep=4, progress=False)
TARGETS = ["class:2", "class:7", dgn.Channel("features.3", 1)]


def _records(results):
    return [json.load(open(r.path[: -len(".png")] + ".json")) for r in results]


@pytest.mark.slow
def test_best_pick_is_what_the_png_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    model = tiny_rgb()
    best = _records(dgn.synthesize(model, TARGETS, pick="best", out=tmp_path / "best", **SETTINGS))
    median = _records(dgn.synthesize(model, TARGETS, pick="median", out=tmp_path / "median", **SETTINGS))
    for b, m in zip(best, median):
        picked, png = b["faithfulness"]["best"], b["faithfulness"]["png"]
        # the same uint8 pixels through the same D, in another batch row: float32 rounding only
        assert np.isclose(picked["activation"], png["activation"], rtol=1e-5, atol=1e-5)
        assert picked["top1"] == png["top1"] == b["top5"][0]["class"]
        # the median is one of the candidates: the pick scores at least as high on its PNG
        assert png["activation"] >= m["faithfulness"]["png"]["activation"] - 1e-5
        assert b["spec"]["snapshots"]["pick"] == "best" and "median" in m["faithfulness"]
