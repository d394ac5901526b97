"""Transformation robustness: the parameters' streams, the graph's resampler against its definition,
the step with transforms against float64, and the literal method (--transforms none) untouched."""

import json
import math
import os

import numpy as np
import pytest
import torch

from dgn_engine.cli.main import main
from dgn_engine.engine.backends.step_graph import StepGraphBackend
from dgn_engine.engine.selfcheck import selfcheck
from dgn_engine.exporter.verify import verify
from dgn_engine.kernels.transforms import transform
from dgn_engine.rng import TransformStreams
from dgn_engine.spec import TRANSFORM_PRESETS, Transforms, parse_transforms
from dgn_engine.targets import parse_target
from dgn_engine.transforms import identity, resample
from tests.conftest import error_line, export


def _params(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [rng.uniform(-3, 3, k), rng.uniform(-3, 3, k), rng.uniform(0.8, 1.25, k), rng.uniform(-0.4, 0.4, k)], 1
    )


def test_resampler_follows_its_definition():
    """The graph's resampler (gathers, torch) against transforms.resample (numpy loops over its
    definition), both float64: 1e-12 leaves room for summation order only."""
    images = np.random.default_rng(1).standard_normal((5, 3, 13, 17))
    params = _params(5)
    ours = transform(torch.from_numpy(images), torch.from_numpy(params)).numpy()
    np.testing.assert_allclose(ours, resample(images, params), rtol=0, atol=1e-12)


def test_identity_parameters_return_the_image_bit_for_bit():
    images = torch.randn(4, 3, 32, 32)
    assert torch.equal(transform(images, torch.from_numpy(identity(4))), images)
    assert np.array_equal(resample(images.numpy(), identity(4)).astype(np.float32), images.numpy())


def test_resampler_gradient_is_the_transpose():
    """<T x, y> = <x, T^T y>: the gradient autograd (a scatter-add) gives is the transpose of the map."""
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    params = torch.from_numpy(_params(2, 3))
    (grad,) = torch.autograd.grad((transform(x, params) * y).sum(), [x])
    basis = torch.eye(2 * 3 * 11 * 11, dtype=torch.float64).reshape(-1, 2, 3, 11, 11)
    matrix = torch.stack([transform(b, params).reshape(-1) for b in basis], 1)  # columns: T e_i
    np.testing.assert_allclose(grad.reshape(-1).numpy(), (matrix.T @ y.reshape(-1)).numpy(), atol=1e-12)


def test_streams_are_per_target_and_within_their_ranges():
    t = TRANSFORM_PRESETS["standard"]
    a, b, c = (parse_target(x) for x in ("class:1", "class:2", "channel:features.3:4"))
    together = TransformStreams(7, [a, b, c], t, 32, 48)
    alone = TransformStreams(7, [b], t, 32, 48)
    draws = np.stack([together.next() for _ in range(200)])  # [steps, K, 4]
    np.testing.assert_array_equal(draws[:, 1], np.stack([alone.next()[0] for _ in range(200)]))
    assert draws.dtype == np.float32
    assert np.abs(draws[..., 0]).max() <= 0.05 * 48 and np.abs(draws[..., 1]).max() <= 0.05 * 32
    assert np.abs(draws[..., 2] - 1).max() <= 0.1 + 1e-6 and np.abs(draws[..., 3]).max() <= math.radians(10) + 1e-6
    assert np.abs(draws[..., 0]).max() > 0.9 * 0.05 * 48  # the range is used, not a corner of it
    assert not np.array_equal(draws[:, 0], draws[:, 1])
    other_seed = TransformStreams(8, [a], t, 32, 48).next()
    assert not np.array_equal(other_seed[0], draws[0, 0])


def test_transform_settings_parse_and_refuse():
    assert parse_transforms("none") == Transforms() and not Transforms().enabled
    assert parse_transforms("jitter=0.1,rotate=5") == Transforms(0.1, 0.0, 5.0)
    assert parse_transforms("standard").text() == "standard"
    assert Transforms(0.1, 0.0, 5.0).text() == "jitter=0.1,scale=0,rotate=5"


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """Batch-3 artifacts of the tiny classifier with the standard transforms, untrained mode (the
    whole G behind them; pixel mode's tests run transforms with Adam, test_pixel.py)."""
    root = tmp_path_factory.mktemp("tr")
    return export(root / "untrained", "untrained", 3, None, "--taps", "features.3", "--transforms", "standard")


def test_step_with_transforms_matches_float64(transformed):
    """The step graph with transforms against torch float64, fed the same parameters: verify's rule
    (5x torch float32's own error, floor 1e-4, at 75% of the target-steps; see verify.AGREEING)."""
    art = transformed
    assert [i["name"] for i in art.manifest["graphs"]["step"]["inputs"]].count("transform") == 1
    ok, report = verify(art, 6, "cpu", log=lambda *_: None, engine_backends=[StepGraphBackend(art, "cpu")])
    assert ok, report
    assert report["step-graph"]["loss"] < 1e-5


def test_selfcheck_with_transforms(transformed):
    """No torch: the step's gradient with transforms against finite differences through the
    artifacts' own render and classifier graphs and the numpy resampler."""
    assert selfcheck(transformed, "cpu", log=lambda *_: None)


def test_run_with_transforms_records_them_and_resumes(tmp_path, transformed, capsys):
    art = transformed.path
    out = str(tmp_path / "out")
    argv = ["run", "--artifacts", art, "--target", "class:1", "--target", "class:2", "--steps", "6"]
    assert main([*argv, "--out", out, "--quiet"]) == 0
    record = json.load(open(f"{out}/run.json"))
    assert record["spec"]["transforms"] == {"jitter": 0.05, "scale": 0.1, "rotate": 10.0}
    before = os.stat(f"{out}/targets/class-1.json").st_mtime_ns
    assert main([*argv, "--out", out, "--quiet"]) == 0  # resumes: nothing to do, nothing rewritten
    assert os.stat(f"{out}/targets/class-1.json").st_mtime_ns == before
    # other strengths are another run: refused in the same folder, not mixed
    err = error_line(capsys, [*argv, "--out", out, "--transforms", "jitter=0.1"])
    assert "--force" in err or "other" in err

    # the strengths are run-time numbers: the same artifacts run them into another folder, and they
    # change what D saw, so the images; the standard strengths spelt out are the default run, byte for byte
    def pngs(folder):
        return [open(f"{folder}/targets/class-{c}.png", "rb").read() for c in (1, 2)]

    for name, value in (("strong", "jitter=0.1,rotate=20"), ("spelt", "jitter=0.05,scale=0.1,rotate=10")):
        assert main([*argv, "--out", str(tmp_path / name), "--quiet", "--transforms", value]) == 0
    default, strong = pngs(out), pngs(tmp_path / "strong")
    assert all(a != b for a, b in zip(default, strong))
    assert pngs(tmp_path / "spelt") == default


def test_transforms_bad_input(tmp_path, capsys, artifacts):
    none = artifacts["pretrained"].path  # exported without transforms
    out = ["--out", str(tmp_path / "out")]
    for value, words in (
        ("sideways", "transforms must be none, standard"),
        ("jitter=0.9", "jitter"),
        ("scale=x", "scale must be a number"),
        ("rotate=200", "rotate"),
    ):
        err = error_line(capsys, ["run", "--artifacts", none, "--target", "class:1", *out, "--transforms", value])
        assert words in err, err
    err = error_line(capsys, ["run", "--artifacts", none, "--target", "class:1", *out, "--transforms", "standard"])
    assert "exported with transforms none" in err
    err = error_line(capsys, ["run", "--artifacts", none, "--target", "class:1", *out, "--paper"])
    assert "exported with image range bounded, not free" in err
    argv = ["export", "--classifier", "tests.small_models:tiny_rgb", "--mode", "untrained", "--out"]
    err = error_line(capsys, [*argv, str(tmp_path / "t"), "--transforms", "standard", "--backend", "training-api"])
    assert "training-api backend has no transforms" in err
