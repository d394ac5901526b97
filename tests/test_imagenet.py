"""A real pretrained ImageNet classifier as D (the zoo extra, bench/imagenet_zoo.py): EfficientNet-Lite1
in each mode through the exported step graph, one target and a few steps, and the written PNG keeping
the verdict of the image chosen. Marked imagenet: the README's quick command leaves it out, CI runs it."""

import glob
import json

import numpy as np
import onnx
import pytest
from PIL import Image

import dgn_engine as dgn
from tests import small_models

pytest.importorskip("efficientnet_lite_pytorch", reason="the zoo extra: pip install -e '.[zoo]'")
pytestmark = pytest.mark.imagenet

D = "bench.imagenet_zoo:lite1"


@pytest.mark.parametrize("mode", ["untrained", "pixel", "maco", "pretrained"])
def test_lite1_in_each_mode(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    decoder = None
    if mode == "pretrained":  # no decoder of natural photos ships: a random one, its BatchNorm calibrated
        decoder = str(tmp_path / "decoder.pt")
        small_models.write_calibrated_decoder(decoder, 240, "RGB")
    [result] = dgn.synthesize(D, ["class:1"], mode=mode, steps=3, decoder=decoder, out=tmp_path / "o", progress=False)
    record = json.load(open(result.path[: -len(".png")] + ".json"))
    with Image.open(result.path) as png:
        assert (png.size, png.mode) == ((240, 240), "RGB")
    assert record["name"] == "goldfish" and record["steps"] == 3  # the factory's labels
    spec = record["spec"]
    if mode == "untrained":  # from 224 px: the ImageNet defaults (spec.LARGE_G_UNTRAINED)
        assert (spec["image_range"], spec["snapshots"]["pick"], spec["noise"]["sigma"]) == ("sigmoid", "best", 0.0)
    if mode == "pixel":  # each ReLU6 mask of D's gradient became clipped convolutions (graph_rewrites)
        [step] = glob.glob(str(tmp_path / "cache" / "**" / "step.onnx"), recursive=True)
        ops = [n.op_type for n in onnx.load(step, load_external_data=False).graph.node]
        assert ops.count("GreaterOrEqual") == ops.count("Or") == 0
    chosen, on_png = record["faithfulness"][spec["snapshots"]["pick"]], record["faithfulness"]["png"]
    assert np.isfinite(on_png["activation"]) and on_png["top1"] == record["top5"][0]["class"]
    if spec["snapshots"]["pick"] == "best":
        # the best candidate is scored as its PNG's pixels: D's verdict on the file is the one at the pick
        # (the same uint8 input in another batch row: float32 rounding only)
        assert chosen["top1"] == on_png["top1"]
        assert np.isclose(chosen["activation"], on_png["activation"], rtol=1e-5, atol=1e-5)
