"""Pixel mode, the classic baseline: its image against its definition, Adam against torch's, and the
mode through export, verify, self-check, run, resume and gallery like the generator modes."""

import json
import os

import numpy as np
import pytest
import torch

from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck
from dgn_engine.exporter.verify import verify
from dgn_engine.kernels.pixel import colour_matrix, frequency_scale, pixel_image
from dgn_engine.spec import TRANSFORM_PRESETS, default_spec
from dgn_engine.update_rules import adam
from tests.conftest import error_line, export


@pytest.mark.parametrize("size", [10, 9])
def test_pixel_image_is_the_sigmoid_of_the_inverse_fft(size):
    """For a spectrum that is the rfft2 of a real image (divided by the frequency scale), the image is
    sigmoid(irfft2 / 4) per channel, colours decorrelated: float64, 1e-12 (summation order only)."""
    rng = np.random.default_rng(size)
    images = rng.standard_normal((2, 3, size, size))
    spectra = np.fft.rfft2(images)
    spectrum = np.stack([spectra.real, spectra.imag], 2) / frequency_scale(size)
    ours = pixel_image(torch.from_numpy(spectrum), "RGB").numpy()
    mixed = np.einsum("dc,kchw->kdhw", colour_matrix("RGB"), images / 4)
    np.testing.assert_allclose(ours, 1 / (1 + np.exp(-mixed)), rtol=0, atol=1e-12)


def test_colour_matrix_follows_the_channel_order():
    rgb, bgr = colour_matrix("RGB"), colour_matrix("BGR")
    assert np.allclose(np.linalg.norm(rgb, axis=0).max(), 1.0)
    np.testing.assert_array_equal(bgr, rgb[::-1, ::-1])  # the same map with channels listed backwards
    np.testing.assert_array_equal(colour_matrix("L"), np.eye(1))


def test_adam_follows_torch():
    """Our Adam (traced into the step graph) against torch.optim.Adam, float64, 5 steps: 1e-12."""
    p0 = torch.randn(20, dtype=torch.float64)
    grads = [torch.randn(20, dtype=torch.float64) for _ in range(5)]
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    ours, m, v = p0.clone(), torch.zeros(20, dtype=torch.float64), torch.zeros(20, dtype=torch.float64)
    for t, g in enumerate(grads, 1):
        p.grad = g.clone()
        opt.step()
        ours, m, v = adam(ours, g, m, v, t, 0.05, 0.9, 0.999, 1e-8, torch.sqrt)
    np.testing.assert_allclose(ours.numpy(), p.detach().numpy(), rtol=0, atol=1e-12)


def test_pixel_defaults_are_classic_feature_visualisation():
    spec = default_spec("pixel")
    assert (spec.optimizer.name, spec.optimizer.lr, spec.steps) == ("adam", 0.05, 512)
    assert spec.transforms == TRANSFORM_PRESETS["standard"] and spec.regularizer.kind == "none"


@pytest.fixture(scope="module")
def pixel_art(tmp_path_factory):
    return export(tmp_path_factory.mktemp("px") / "art", "pixel", 3, None, "--taps", "features.3")


def test_pixel_step_matches_float64_and_selfcheck(pixel_art):
    """verify's rule (5x torch float32's own error against float64, floor 1e-4) and the torch-free
    self-check (finite differences through render.onnx and classifier.onnx)."""
    names = [i["name"] for i in pixel_art.manifest["graphs"]["step"]["inputs"]]
    assert "noise" not in names and "transform" in names and "spectrum" in names
    assert pixel_art.manifest["trainable_per_target"] == 3 * 32 * 17 * 2
    ok, report = verify(pixel_art, 4, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(pixel_art, "cpu")])
    assert ok, report
    assert report["step-graph"]["loss"] < 1e-5
    assert selfcheck(pixel_art, "cpu", log=lambda *_: None)


def test_pixel_runs_resumes_and_makes_a_gallery(tmp_path, pixel_art, capsys):
    out = str(tmp_path / "out")
    argv = ["run", "--artifacts", pixel_art.path, "--target", "class:1", "--target", "channel:features.3:2"]
    argv += ["--steps", "8", "--out", out, "--quiet"]
    assert main(argv) == 0
    record = json.load(open(os.path.join(out, "targets", "class-1.json")))
    assert record["mode"] == "pixel" and record["steps"] == 8
    before = os.stat(os.path.join(out, "targets", "class-1.json")).st_mtime_ns
    assert main(argv) == 0  # a resume: nothing recomputed, nothing rewritten
    assert os.stat(os.path.join(out, "targets", "class-1.json")).st_mtime_ns == before
    assert main(["gallery", out]) == 0 and os.path.isfile(os.path.join(out, "index.html"))


def test_pixel_bad_input(tmp_path, capsys, decoder_file):
    base = ["export", "--classifier", "tests.small_models:tiny_rgb", "--mode", "pixel", "--out", str(tmp_path / "a")]
    for extra, words in (
        (["--decoder", decoder_file], "pixel mode has no G"),
        (["--g-width", "0.5"], "pixel mode has no G"),
        (["--regularizer", "l2-alpha"], "pixel mode has none"),
        (["--image-range", "free"], "pixel mode's image always lies in the pixel range"),
        (["--backend", "training-api"], "no pixel mode"),
        (["--paper"], "pixel mode is not the paper's method"),
    ):
        assert words in error_line(capsys, [*base, *extra])
