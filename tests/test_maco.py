"""maco mode, the second classic baseline (magnitude-constrained optimisation): its image against its
definition (numpy's inverse DFT), the spectrum of a photo folder,
and the mode through export, verify, self-check, run and resume like pixel mode."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dgn_engine as dgn
from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck
from dgn_engine.exporter.verify import verify
from dgn_engine.kernels.maco import image_magnitude, maco_image, power_law_magnitude
from dgn_engine.kernels.pixel import colour_matrix
from dgn_engine.spec import default_spec
from tests.conftest import error_line, export
from tests.small_models import tiny_rgb


def _standardised(x):
    return (x - x.mean()) / (x.std() + 1e-5)


@pytest.mark.parametrize("size", [10, 9])
def test_maco_image_is_its_definition(size):
    """Phase standardised, irfft2 of magnitude x exp(i phase) (numpy), standardised, recorrelated,
    sigmoid; float64, 1e-10 (summation order only; odd sizes have no Nyquist column)."""
    rng = np.random.default_rng(size)
    phase = rng.standard_normal((2, 3, size, size // 2 + 1))
    magnitude = power_law_magnitude(3, size).astype(np.float64)
    ours = maco_image(torch.from_numpy(phase), torch.from_numpy(magnitude), "RGB").numpy()
    for k in range(2):
        p = _standardised(phase[k])
        # irfft2 reads a Hermitian spectrum: make the reference's the same as ours by taking the real
        # part of the full inverse DFT of the half spectrum, counted twice where its mirror is missing
        half = magnitude * np.exp(1j * p)
        weight = np.where((np.arange(size // 2 + 1) == 0) | (2 * np.arange(size // 2 + 1) == size), 1.0, 2.0)
        full = np.zeros((3, size, size), complex)
        full[:, :, : size // 2 + 1] = half * weight
        x = np.real(np.fft.ifft2(full)) * size * size
        mixed = np.einsum("dc,chw->dhw", colour_matrix("RGB"), _standardised(x))
        np.testing.assert_allclose(ours[k], 1 / (1 + np.exp(-mixed)), rtol=0, atol=1e-10)


def test_image_magnitude_of_photos():
    """The mean magnitude of the photos' decorrelated colours: one photo of a single colour plane has
    the magnitude of that plane, seen through the decorrelating matrix."""
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (1, 12, 12, 3)).astype(np.uint8)
    mag = image_magnitude(photo, "RGB")
    x = np.moveaxis(photo[0] / 255.0, -1, 0)
    d = np.einsum("dc,chw->dhw", np.linalg.inv(colour_matrix("RGB")), x)
    want = np.abs(np.fft.rfft2(d - d.mean(axis=(1, 2), keepdims=True)))
    np.testing.assert_allclose(mag, want, rtol=1e-5, atol=1e-6)


def test_maco_defaults():
    spec = default_spec("maco")
    assert (spec.optimizer.name, spec.optimizer.lr, spec.steps, spec.transforms.text()) == (
        "adam",
        1.0,
        256,
        "standard",
    )


@pytest.fixture(scope="module")
def maco_art(tmp_path_factory):
    return export(tmp_path_factory.mktemp("maco") / "art", "maco", 3, None, "--taps", "features.3")


def test_maco_step_matches_float64_and_selfcheck(maco_art):
    """verify's rule (5x torch float32's own error against float64, floor 1e-4) and the torch-free
    self-check (finite differences through render.onnx and classifier.onnx)."""
    names = [i["name"] for i in maco_art.manifest["graphs"]["step"]["inputs"]]
    assert "noise" not in names and "phase" in names
    assert maco_art.manifest["trainable_per_target"] == 3 * 32 * 17
    ok, report = verify(maco_art, 4, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(maco_art, "cpu")])
    assert ok, report
    assert selfcheck(maco_art, "cpu", log=lambda *_: None)


def test_maco_runs_and_resumes(tmp_path, maco_art):
    out = str(tmp_path / "out")
    argv = ["run", "--artifacts", maco_art.path, "--target", "class:1", "--steps", "8", "--out", out, "--quiet"]
    assert main(argv) == 0
    record = json.load(open(os.path.join(out, "targets", "class-1.json")))
    assert record["mode"] == "maco" and record["steps"] == 8
    before = os.stat(os.path.join(out, "targets", "class-1.json")).st_mtime_ns
    assert main(argv) == 0  # a resume: nothing recomputed, nothing rewritten
    assert os.stat(os.path.join(out, "targets", "class-1.json")).st_mtime_ns == before


def test_spectrum_folder_is_used_and_recorded(tmp_path, monkeypatch):
    """Photos from a folder give another magnitude than the power law: another export, other images,
    and the artifacts record the spectrum's digest."""
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):  # stripes: a spectrum far from 1/f
        stripes = np.tile((rng.random((1, 40, 3)) * 255).astype(np.uint8), (40, 1, 1))
        Image.fromarray(stripes).save(photos / f"p{i}.png")
    settings = dict(mode="maco", steps=4, progress=False)
    [law] = dgn.synthesize(tiny_rgb(), "class:1", out=tmp_path / "law", **settings)
    [own] = dgn.synthesize(tiny_rgb(), "class:1", spectrum=str(photos), out=tmp_path / "own", **settings)
    assert not np.array_equal(np.asarray(law.image), np.asarray(own.image))

    def sources(name):
        return set(json.load(open(tmp_path / name / "run.json"))["provenance"]["source_files_sha256"])

    assert len(sources("own") - sources("law")) == 1  # the spectrum's digest: what made the results


def test_maco_bad_input(tmp_path, capsys, decoder_file):
    base = ["export", "--classifier", "tests.small_models:tiny_rgb", "--out", str(tmp_path / "a")]
    for extra, words in (
        (["--mode", "maco", "--decoder", decoder_file], "maco mode has no G"),
        (["--mode", "maco", "--regularizer", "l2-alpha"], "maco mode has none"),
        (["--mode", "maco", "--backend", "training-api"], "no maco mode"),
        (["--mode", "maco", "--spectrum", str(tmp_path / "missing")], "is not a folder"),
        (["--mode", "pixel", "--spectrum", str(tmp_path)], "maco mode's fixed Fourier magnitude"),
    ):
        assert words in error_line(capsys, [*base, *extra])


def test_spectrum_folder_refuses_links_and_fifos(tmp_path, capsys):
    """A photo folder is read, never followed out of: a link or a FIFO named like a photo is refused in
    one line (a FIFO would block the read forever), and nothing in the folder changes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    base = ["export", "--classifier", "tests.small_models:tiny_rgb", "--mode", "maco", "--out", str(tmp_path / "o")]
    (folder / "link.png").symlink_to(folder / "a.png")
    assert "link.png' is a link or not a plain file" in error_line(capsys, [*base, "--spectrum", str(folder)])
    (folder / "link.png").unlink()
    os.mkfifo(folder / "pipe.png")
    assert "pipe.png' is a link or not a plain file" in error_line(capsys, [*base, "--spectrum", str(folder)])
    assert sorted(os.listdir(folder)) == ["a.png", "pipe.png"]
