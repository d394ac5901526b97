"""The engine: all-classes jobs on the step graph, results, gallery, resume, interruption, errors."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dgn_engine.cli.main import main
from dgn_engine.targets import parse_target
from tests.conftest import error_line

LABELS = ["tee", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def run_argv(art, out, *extra):
    return ["run", "--artifacts", art.path, "--out", str(out), "--quiet", *extra]


def load(out, tid):
    with open(os.path.join(out, "targets", f"{tid}.json")) as f:
        return json.load(f)


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return str(path)


@pytest.mark.parametrize("mode", ["untrained", "pretrained"])
def test_all_classes_writes_every_file(tmp_path, artifacts, labels_file, mode):
    out = tmp_path / "out"
    assert main(run_argv(artifacts[mode], out, "--all-classes", "--steps", "12", "--labels", labels_file)) == 0
    for c in range(10):
        rec = load(out, f"class-{c}")
        assert rec["target"] == f"class:{c}" and rec["name"] == LABELS[c]
        assert rec["steps"] == 12 and rec["seed"] == 0 and rec["mode"] == mode and rec["backend"] == "step-graph"
        assert len(rec["top5"]) == 5 and {"class", "name", "score"} <= set(rec["top5"][0])
        assert rec["top5"][0]["name"] == LABELS[rec["top5"][0]["class"]]
        assert np.isfinite(rec["final_activation"]) and rec["seconds"] > 0
        assert rec["loss_curve"][0][0] == 1 and rec["loss_curve"][-1][0] == 12
        assert (out / "targets" / f"class-{c}.png").stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert run["progress"] == {"done": 10, "total": 10, "state": "finished"}
    assert run["backend"]["manifest_sha256"] == artifacts[mode].manifest_sha256
    for f in ("index.html", "summary.json", "sheet-001.png"):
        assert (out / f).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"] == 10 and summary["class_targets"] == 10
    assert not [f for f in os.listdir(out / "targets") if f.startswith(".tmp-")]


def test_png_is_what_the_classifier_saw(tmp_path, artifacts):
    """The top-5 in the JSON is D on the written PNG read back through D's preprocessing."""
    from dgn_engine.engine.backends.step_graph import StepGraphBackend
    from dgn_engine.engine.outputs import read_png

    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:2", "--steps", "10")) == 0
    rec = load(out, "class-2")
    pp = art.preprocessing
    pixels = read_png(str(out / "targets/class-2.png"), pp.channels)
    scores = StepGraphBackend(art, "cpu").classify(pp.to_model(pixels)[None])["output"][0]
    assert [t["class"] for t in rec["top5"]] == list(np.argsort(-scores, kind="stable")[:5])
    np.testing.assert_allclose([t["score"] for t in rec["top5"]], np.sort(scores)[::-1][:5], rtol=1e-6)
    assert rec["final_activation"] == pytest.approx(scores[2], rel=1e-6)


@pytest.fixture(scope="module")
def bgr_artifacts(tmp_path_factory):
    """Batch-3 untrained artifacts of a Caffe-style classifier: BGR, mean on the 0..255 scale."""
    from dgn_engine.artifacts import load_artifacts

    out = tmp_path_factory.mktemp("bgr") / "art"
    argv = ["export", "--classifier", "tests.small_models:tiny_bgr_caffe", "--mode", "untrained", "--batch", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    return load_artifacts(str(out))


def recorded_images(monkeypatch) -> list:
    """The median images (D's input space) that the runs' batches ended with, as the engine made them."""
    from dgn_engine.engine import runners

    real, images = runners.run_batch, []

    def recording(*args, **kwargs):
        outcomes = real(*args, **kwargs)
        images.extend(o.image.copy() for o in outcomes)
        return outcomes

    monkeypatch.setattr(runners, "run_batch", recording)
    return images


def expected_png(x: np.ndarray, pp, display: str, mode: str) -> np.ndarray:
    """What each --display promises, from D's input [C, H, W] in D's channel order: model, the picture D
    saw (its preprocessing undone); contrast, that stretched to 0..255 (one map per image); original,
    the original code's per-image min-max to 0..1, square-rooted in untrained mode. PNGs are RGB."""
    x = np.moveaxis(x.astype(np.float64), 0, -1)
    if display == "original":
        v = (x - x.min()) / (x.max() - x.min())
        v = (np.sqrt(v) if mode == "untrained" else v) * 255
    else:
        v = (x * np.asarray(pp.std) + np.asarray(pp.mean)) * 255
    v = np.clip(np.rint(v[..., ::-1] if pp.order == "BGR" else v), 0, 255)
    if display == "contrast":
        v = np.rint((v - v.min()) * 255 / (v.max() - v.min()))
    return v.astype(np.uint8)


@pytest.mark.parametrize(
    "mode, order, display",
    [
        ("untrained", "RGB", "original"),
        ("pretrained", "RGB", "original"),
        ("untrained", "BGR", "original"),
        ("untrained", "BGR", "model"),
        ("pretrained", "RGB", "contrast"),
    ],
)
def test_display_writes_what_it_says(tmp_path, artifacts, bgr_artifacts, monkeypatch, mode, order, display):
    """The PNG is the option's transformation of the image the search ended with, exactly (the same
    float64 arithmetic, rounded once); the other views report D's top-5 on the model view, which is what
    a --display model run of the same target reports."""
    art = bgr_artifacts if order == "BGR" else artifacts[mode]
    assert art.preprocessing.order == order
    images = recorded_images(monkeypatch)
    out = tmp_path / display
    assert main(run_argv(art, out, "--target", "class:1", "--steps", "6", "--display", display)) == 0
    [x] = images
    png = np.asarray(Image.open(out / "targets" / "class-1.png"))
    assert Image.open(out / "targets" / "class-1.png").mode == "RGB"
    want = expected_png(x, art.preprocessing, display, mode)
    np.testing.assert_array_equal(png, want)
    if display != "model":
        assert png.min() == 0 and png.max() == 255
    rec = load(out, "class-1")
    assert rec["display"] == display
    if display != "model":
        assert main(run_argv(art, tmp_path / "model", "--target", "class:1", "--steps", "6")) == 0
        np.testing.assert_array_equal(images[1], x)  # the same search
        plain = load(tmp_path / "model", "class-1")
        assert rec["model_view"]["top5"] == plain["top5"]
        assert rec["model_view"]["final_activation"] == plain["final_activation"]


def test_caffe_classifier_scores_its_png(tmp_path, bgr_artifacts):
    """A BGR classifier with the mean in 0..255 units: the PNG is RGB (test_display_writes_what_it_says)
    and D's top-5 reported for it is the torch module's on the PNG preprocessed the Caffe way here."""
    import torch

    from tests.small_models import tiny_bgr_caffe

    out = tmp_path / "o"
    assert main(run_argv(bgr_artifacts, out, "--target", "class:1", "--steps", "6")) == 0
    png = np.asarray(Image.open(out / "targets" / "class-1.png"), np.float32)
    bgr = png[..., ::-1] - np.float32([103.939, 116.779, 123.68])
    with torch.no_grad():
        logits = tiny_bgr_caffe()(torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None])[0].numpy()
    scores = np.maximum(logits, 0)  # D's scores are read through the final ReLU
    rec = load(out, "class-1")
    assert [t["class"] for t in rec["top5"]] == list(np.argsort(-scores, kind="stable")[:5])
    # float32 through other ops in another order ((p / 255 - m / 255) * 255 against p - m; onnxruntime
    # against torch): a few ulps per layer, far below the spread between classes
    atol = 1e-4 * float(scores.max())
    np.testing.assert_allclose([t["score"] for t in rec["top5"]], np.sort(scores)[::-1][:5], rtol=1e-4, atol=atol)
    assert rec["final_activation"] == pytest.approx(scores[1], rel=1e-4, abs=atol)


def test_noise_sigma_gaussian_dropout(tmp_path, artifacts):
    """The original code's GaussianDropout(0.05): multiplicative noise N(1, 0.05 / 0.95) on the features,
    recorded as such; a run-time sigma of the same artifacts, so other images than the default 0.05 and
    the same as that sigma given as a number."""
    art = artifacts["pretrained"]

    def run(name, *extra):
        assert main(run_argv(art, tmp_path / name, "--target", "class:1", "--steps", "8", *extra)) == 0
        spec = json.loads((tmp_path / name / "run.json").read_text())["spec"]
        return spec["noise"], (tmp_path / name / "targets" / "class-1.png").read_bytes()

    sigma = (0.05 / 0.95) ** 0.5
    noise, dropout = run("dropout", "--noise-sigma", "gaussian-dropout")
    assert noise["kind"] == "multiplicative" and noise["sigma"] == pytest.approx(sigma, rel=1e-12)
    default_noise, default = run("default")
    assert default_noise == dict(noise, sigma=0.05) and default != dropout
    assert run("number", "--noise-sigma", repr(sigma)) == (noise, dropout)


def test_gaussian_dropout_refused_where_the_noise_is_additive(tmp_path, artifacts, capsys):
    argv = run_argv(artifacts["untrained"], tmp_path / "u", "--target", "class:1", "--noise-sigma", "gaussian-dropout")
    err = error_line(capsys, argv)
    assert "multiplicative" in err and "additive" in err and "--noise-sigma" in err


def test_gallery_in_headless_chromium(tmp_path, artifacts):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    out = tmp_path / "g"
    assert main(run_argv(artifacts["pretrained"], out, "--all-classes", "--steps", "6")) == 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        "--dump-dom",
    ]
    page = subprocess.run(
        [chromium, *flags, (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120
    )
    assert page.returncode == 0, page.stderr[-2000:]
    assert page.stdout.count('class="card"') == 10
    assert page.stdout.count("<img") >= 10
    console = [line for line in page.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def snapshot(out):
    folder = out / "targets"
    return {f: ((folder / f).stat().st_mtime_ns, (folder / f).read_bytes()) for f in sorted(os.listdir(folder))}


# SIGKILL, Ctrl-C and SIGTERM mid-run: tests/test_faults.py


def test_second_run_does_nothing(tmp_path, artifacts, capsys):
    out = tmp_path / "o"
    argv = run_argv(artifacts["pretrained"], out, "--all-classes", "--steps", "4")
    assert main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing to do: all 10 targets" in capsys.readouterr().out
    assert snapshot(out) == before


def test_divergence_stops_its_batch_and_the_job_goes_on(tmp_path, artifacts):
    out = tmp_path / "o"
    targets = ["1e38*class:0", "class:1", "class:2", "class:3"]  # batch of 3, then 1
    argv = run_argv(artifacts["pretrained"], out, "--steps", "20")
    for t in targets:
        argv += ["--target", t]
    assert main(argv) == 0
    bad = load(out, parse_target("1e38*class:0").id)
    assert bad["diverged"] and "loss became" in bad["diverged"]
    assert load(out, "class-1")["diverged"] == bad["diverged"]  # the whole batch stopped
    assert load(out, "class-3")["diverged"] is None and np.isfinite(load(out, "class-3")["final_activation"])
    assert json.loads((out / "summary.json").read_text())["diverged"] == 3


def test_engine_never_imports_torch(tmp_path, artifacts):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from dgn_engine.cli.main import main\n"
        f"rc = main({run_argv(artifacts['untrained'], tmp_path / 'o', '--all-classes', '--steps', '3')!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None], 'torch imported'\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(os.listdir(tmp_path / "o" / "targets")) == 20


def test_bad_input(tmp_path, artifacts, capsys):
    art = artifacts["pretrained"]
    err = error_line(
        capsys, ["run", "--artifacts", str(tmp_path / "none"), "--all-classes", "--out", str(tmp_path / "o")]
    )
    assert "does not exist" in err
    old = tmp_path / "old"
    shutil.copytree(art.path, old)
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = 0
    (old / "manifest.json").write_text(json.dumps(m))
    assert "format version 0" in error_line(
        capsys, ["run", "--artifacts", str(old), "--all-classes", "--out", str(tmp_path / "o")]
    )
    err = error_line(capsys, run_argv(art, tmp_path / "o", "--target", "channel:features.0:1"))
    assert "do not tap (taps: features.3); export again with --taps features.0" in err
    assert "outside the classifier" in error_line(capsys, run_argv(art, tmp_path / "o", "--target", "class:10"))
    try:
        import onnxruntime

        has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        err = error_line(capsys, run_argv(art, tmp_path / "o", "--target", "class:1", "--device", "cuda"))
        assert "onnxruntime-gpu" in err
    assert "batches of 3" in error_line(capsys, run_argv(art, tmp_path / "o", "--target", "class:1", "--batch", "2"))
    assert "for --mode pretrained, not untrained" in error_line(
        capsys, run_argv(art, tmp_path / "o", "--target", "class:1", "--mode", "untrained")
    )


def test_other_spec_in_out_folder_is_refused_and_kept(tmp_path, artifacts, capsys):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1", "--steps", "4")) == 0
    before = snapshot(out)
    err = error_line(capsys, run_argv(art, out, "--target", "class:1", "--steps", "5"))
    assert "holds results made otherwise (steps 4 -> 5)" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_write_error_stops_the_job_and_keeps_what_was_finished(tmp_path, artifacts, capsys, monkeypatch, code):
    from dgn_engine.files import Folder

    real, calls = Folder.write, []

    def failing(folder, name, data):
        calls.append(name)
        if len(calls) > 3:  # the first batch's three PNGs, then the disk "fills"
            raise OSError(code, os.strerror(code), name)
        real(folder, name, data)

    out = tmp_path / "o"
    assert main(run_argv(artifacts["pretrained"], out, "--target", "class:7", "--steps", "3")) == 0
    before = snapshot(out)
    monkeypatch.setattr(Folder, "write", failing)
    err = error_line(capsys, run_argv(artifacts["pretrained"], out, "--all-classes", "--steps", "3"))
    assert os.strerror(code) in err and "finished targets are kept" in err
    for f, v in before.items():
        assert snapshot(out)[f] == v


def test_auto_device_without_a_driver_is_the_cpu(monkeypatch):
    """onnxruntime-gpu on a machine without a GPU (a CUDA image on a CPU node): --device auto takes the
    CPU at once instead of letting the CUDA provider fail, with its errors printed, first."""
    from dgn_engine.engine.backends import onnx_session

    class GpuBuild:  # what onnxruntime-gpu lists whether or not a driver is there
        @staticmethod
        def get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(onnx_session, "ort", lambda: GpuBuild)
    monkeypatch.setattr(onnx_session, "cuda_driver", lambda: False)
    assert onnx_session.providers("auto") == (["CPUExecutionProvider"], "cpu")
    assert onnx_session.providers("cuda")[1] == "cuda"  # asked for: tried, and refused by the session if it fails
    monkeypatch.setattr(onnx_session, "cuda_driver", lambda: True)
    assert onnx_session.providers("auto")[1] == "cuda"


def test_large_weights_are_not_prepacked_and_step_the_same(artifacts, monkeypatch):
    """Over PREPACK_LIMIT of constants, onnxruntime keeps no repacked copy of each weight (it doubled
    VGG-16's in memory); a step is the same computation either way: to float32 rounding of a few
    hundred products (1e-5 relative)."""
    from dgn_engine.engine.backends import onnx_session
    from dgn_engine.engine.backends.step_graph import StepGraphBackend
    from dgn_engine.engine.loop import transform_streams

    art = artifacts["untrained"]

    def first_step(limit):
        monkeypatch.setattr(onnx_session, "PREPACK_LIMIT", limit)
        backend = StepGraphBackend(art, "cpu")
        backend.load()
        try:
            unpacked = backend.session.get_session_options().get_session_config_entry("session.disable_prepacking")
        except RuntimeError:  # onnxruntime's answer where the entry was never set
            unpacked = "0"
        targets = [parse_target("class:1")] * art.batch
        backend.start(targets, art.spec)
        streams = transform_streams(backend, art.spec, targets)
        noise = np.random.default_rng(0).standard_normal((art.batch, backend.features))
        out = backend.step(noise, read=True, image=True, transform=streams.next() if streams else None)
        return unpacked == "1", out

    assert art.weights_bytes < onnx_session.PREPACK_LIMIT
    (unpacked, default), (unpacked_at_0, shared) = first_step(onnx_session.PREPACK_LIMIT), first_step(0)
    assert not unpacked and unpacked_at_0
    np.testing.assert_allclose(shared.loss, default.loss, rtol=1e-5)
    np.testing.assert_allclose(shared.image, default.image, rtol=1e-5, atol=1e-5)
