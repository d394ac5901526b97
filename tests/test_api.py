"""The Python API: `dgn.synthesize` on an in-memory module gives the CLI's images, the export cache is
reused, target algebra round-trips through the grammar, `dgn.Engine` needs no torch."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dgn_engine as dgn
from dgn_engine.cli.main import main
from dgn_engine.targets import parse_target
from tests.small_models import tiny_rgb

SETTINGS = dict(steps=6, seed=4, progress=False)
TARGETS = ["class:3", dgn.Channel("features.3", 2)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: calls with the same model and settings share an export."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("DGN_ENGINE_CACHE", str(path))
        yield path


def _cli_pngs(out, ids):
    return [np.asarray(Image.open(os.path.join(out, "targets", f"{i}.png"))) for i in ids]


def test_synthesize_gives_the_clis_images(tmp_path, cache):
    """Same module, settings and batch: the API's results are the CLI's, PNG for PNG, on the torch
    reference and on the step graph."""
    model = tiny_rgb()
    ids = [parse_target(t).id for t in ("class:3", "channel:features.3:2")]
    ours = dgn.synthesize(model, TARGETS, backend="torch", **SETTINGS)
    cli = ["--classifier", "tests.small_models:tiny_rgb", "--mode", "untrained", "--steps", "6", "--seed", "4"]
    targets = ["--target", "class:3", "--target", "channel:features.3:2"]
    assert main(["run", "--backend", "torch", *cli, *targets, "--out", str(tmp_path / "t"), "--quiet"]) == 0
    for r, png in zip(ours, _cli_pngs(tmp_path / "t", ids)):
        np.testing.assert_array_equal(r.array, png)

    graph = dgn.synthesize(model, TARGETS, **SETTINGS)  # batch 2: both targets in one step graph
    # the CLI on the artifacts the call exported (an export is deterministic: test_export.py)
    [art] = [
        a
        for a in (cache / "exports").iterdir()
        if json.loads((a / "manifest.json").read_text())["taps"] == ["features.3"]
    ]
    assert json.loads((art / "manifest.json").read_text())["batch"] == 2
    assert (
        main(
            [
                "run",
                "--artifacts",
                str(art),
                *targets,
                "--steps",
                "6",
                "--seed",
                "4",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 0
    )
    for r, png in zip(graph, _cli_pngs(tmp_path / "g", ids)):
        np.testing.assert_array_equal(r.array, png)
        assert r.record["provenance"]["backend"] == "step-graph"


def _module_state(model: torch.nn.Module) -> dict:
    tensors = {**dict(model.named_parameters()), **{f"buffer {n}": b for n, b in model.named_buffers()}}
    state = {n: (t.detach().clone(), t.dtype, t.device, t.requires_grad) for n, t in tensors.items()}
    return {**state, **{f"training {n}": m.training for n, m in model.named_modules()}}


@pytest.mark.parametrize("backend", ["torch", "step-graph"])
def test_the_callers_module_is_left_as_it_was(tmp_path, monkeypatch, backend):
    """Every parameter and buffer (values, dtype, device, requires_grad) and every submodule's mode: a
    BatchNorm in training mode would update its running statistics if the search ran the caller's module;
    frozen and trainable parameters and train and eval submodules are mixed so that no blanket setting
    passes."""
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), tiny_rgb()).train()
    model.preprocessing = model[1].preprocessing
    model[1].features.eval()
    for p in model[1].features[0].parameters():
        p.requires_grad_(False)
    before = _module_state(model)
    dgn.synthesize(model, "class:1", backend=backend, **dict(SETTINGS, mode="pixel"))  # no G: a quick export
    after = _module_state(model)
    assert after.keys() == before.keys()
    for name, was in before.items():
        if name.startswith("training"):
            assert after[name] == was, name
        else:
            assert after[name][1:] == was[1:], name
            torch.testing.assert_close(after[name][0], was[0], rtol=0, atol=0, msg=name)  # exactly unchanged
    assert model[0].num_batches_tracked.item() == 0


def _cli_run(art, out, targets, *extra):
    argv = ["run", "--artifacts", str(art), "--steps", "6", "--seed", "4", "--out", str(out), "--quiet", *extra]
    assert main([*argv, *(a for t in targets for a in ("--target", str(t)))]) == 0
    return _cli_pngs(out, [parse_target(str(t)).id for t in targets])


@pytest.mark.slow  # an export of its own (the quick tier keeps under 5 minutes)
def test_export_makes_the_artifacts_that_synthesize_and_run_use(tmp_path, cache):
    """dgn.export's folder, run by dgn.synthesize and by the CLI: the images of synthesize on the module
    itself, PNG for PNG (the same graphs: an export is deterministic, test_export.py)."""
    art = tmp_path / "art"
    dgn.export(tiny_rgb(), art, taps=["features.3"], batch=2, progress=False)
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["batch"] == 2 and manifest["taps"] == ["features.3"] and manifest["spec"]["mode"] == "untrained"
    from_folder = dgn.synthesize(str(art), TARGETS, **SETTINGS)
    direct = dgn.synthesize(tiny_rgb(), TARGETS, **SETTINGS)
    cli = _cli_run(art, tmp_path / "cli", TARGETS)
    for r, d, png in zip(from_folder, direct, cli, strict=True):
        np.testing.assert_array_equal(r.array, png)
        np.testing.assert_array_equal(r.array, d.array)
    run = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert from_folder[0].record["provenance"] == run["provenance"]


@pytest.mark.slow
def test_synthesize_pretrained_with_a_decoder(tmp_path, cache, artifacts, decoder_file):
    """decoder= : the pretrained mode's export of the module and that decoder, which the CLI's export of
    the same files made too (conftest's artifacts): the same images, PNG for PNG."""
    targets = ["class:1", "class:2", "channel:features.3:2"]
    ours = dgn.synthesize(tiny_rgb(), targets, mode="pretrained", decoder=decoder_file, batch=3, **SETTINGS)
    assert all(r.record["mode"] == "pretrained" for r in ours)
    for r, png in zip(ours, _cli_run(artifacts["pretrained"].path, tmp_path / "cli", targets), strict=True):
        np.testing.assert_array_equal(r.array, png)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["factory", "torchscript", "onnx"])
def test_synthesize_on_a_factory_or_a_file(tmp_path, cache, form):
    """ "module:factory", a traced TorchScript archive and an ONNX file of the same net: the images of the
    in-memory module."""
    net = tiny_rgb()
    size, pp = 32, dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    example = torch.randn(2, 3, size, size)
    if form == "factory":
        model, given = "tests.small_models:tiny_rgb", {}
    elif form == "torchscript":
        model, given = str(tmp_path / "d.pt"), dict(image_size=size, **pp)
        torch.jit.save(torch.jit.trace(net, example), model)
    else:
        model, given = str(tmp_path / "d.onnx"), pp  # the file tells its size
        torch.onnx.export(
            net, (example,), model, dynamo=False, input_names=["image"], dynamic_axes={"image": {0: "batch"}}
        )
    settings = dict(SETTINGS, mode="pixel")  # no G: the quickest export
    ours = dgn.synthesize(model, TARGETS[:1], **given, **settings)
    want = dgn.synthesize(net, TARGETS[:1], **settings)
    # the same ops on the same weights (the archive's run one by one as torch ops, the ONNX file's
    # weights kept as they are): equal here; one level of 255 allows a float32 tie rounded the other way
    diff = np.abs(ours[0].array.astype(int) - want[0].array)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    if form != "factory":
        digest = hashlib.sha256(open(model, "rb").read()).hexdigest()
        assert ours[0].record["provenance"]["source_files_sha256"] == [digest]


def test_result_object(tmp_path, cache):
    labels = [f"thing {i}" for i in range(10)]
    [r] = dgn.synthesize(tiny_rgb(), dgn.Class(4), labels=labels, out=tmp_path / "o", **SETTINGS)
    assert r.target == dgn.Class(4) and r.name == "thing 4"
    assert r.array.shape == (32, 32, 3) and r.array.dtype == np.uint8
    assert r._repr_png_().startswith(b"\x89PNG")
    assert r.top5[0][1] in labels and len(r.top5) == 5
    assert r.activation == pytest.approx(r.record["final_activation"])
    assert r.curve and r.curve[-1][0] == 6 and r.seconds > 0
    assert os.path.isfile(r.path)
    np.testing.assert_array_equal(r.array, np.asarray(Image.open(r.path)))  # the PNG as written
    sheet = dgn.grid([r, r], columns=2, tile=64)
    assert sheet.size == (2 * 64, 64 + 2 * 14)  # 32 px images as 64 px tiles, two caption lines under each


def test_target_algebra_prints_the_grammar_and_parses_back():
    from dgn_engine.errors import UsageError
    from dgn_engine.targets import parse_target

    t = dgn.Class(9) + 0.5 * dgn.Channel("features.28", 17) - dgn.Neuron("features.28", 17, 7, 7)
    assert str(t) == "class:9+0.5*channel:features.28:17+-1*neuron:features.28:17:7:7"
    assert parse_target(str(t)) == t
    assert str(dgn.Class(1) + dgn.Class(1)) == "2*class:1"
    assert str(dgn.Neuron("blocks.0", 3, 5)) == "neuron:blocks.0:3:5"
    assert [str(c) for c in dgn.all_classes(3)] == ["class:0", "class:1", "class:2"]
    with pytest.raises(ValueError, match="cancels out"):
        dgn.Class(1) - dgn.Class(1)
    with pytest.raises(UsageError, match="layer name 'bad layer'"):
        dgn.Channel("bad layer", 1)


def test_bad_calls_say_what_to_do(cache):
    from dgn_engine.errors import UsageError

    with pytest.raises(UsageError, match="does not tell its input size: give image_size "):  # the API's name
        dgn.synthesize(__import__("torch").nn.Sequential(), "class:1", **SETTINGS)
    with pytest.raises(UsageError, match="unknown setting"):
        dgn.synthesize(tiny_rgb(), "class:1", stepz=3)
    with pytest.raises(UsageError, match="outside the classifier"):
        dgn.synthesize(tiny_rgb(), "class:10", **SETTINGS)
    with pytest.raises(UsageError, match="not a list"):
        dgn.synthesize(tiny_rgb(), [[1]], **SETTINGS)


def test_engine_needs_no_torch(tmp_path, artifacts):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dgn_engine as dgn\n"
        f"engine = dgn.Engine({artifacts['pretrained'].path!r})\n"
        "results = engine.run(dgn.all_classes(engine.num_classes)[:4], steps=3, progress=False)\n"
        "assert len(results) == 4 and results[0].array.shape == (32, 32, 3), results\n"
        "from dgn_engine.errors import UsageError\n"
        "try:\n"
        "    engine.run('channel:features.0:1', progress=False)\n"
        "    raise SystemExit('an untapped layer ran')\n"
        "except UsageError as e:\n"
        "    assert \"do not tap (taps: features.3); export again with taps='features.0'\" in str(e), e\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None], 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_export_cache_is_reused(cache, monkeypatch):
    """The second call on the same model exports nothing (here the export of test_result_object's
    call, same weights and settings, serves all of them); other weights key another export."""
    import dgn_engine.exporter.manifest as manifest
    from dgn_engine.api import export_key
    from dgn_engine.exporter.classifiers import classifier_from_module
    from dgn_engine.exporter.coupled import couple
    from dgn_engine.spec import default_spec

    real, calls = manifest.export_artifacts, []

    def counted(*a, **k):
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(manifest, "export_artifacts", counted)
    model = tiny_rgb()
    first = dgn.synthesize(model, "class:1", **SETTINGS)
    exported = len(calls)
    assert exported <= 1
    again = dgn.synthesize(model, "class:1", **SETTINGS)
    assert len(calls) == exported  # the second call on the same model exports nothing
    np.testing.assert_array_equal(first[0].array, again[0].array)
    other = tiny_rgb()
    for p in other.parameters():
        p.data += 0.01
    spec = default_spec("untrained")
    keys = [export_key(couple(classifier_from_module(m), spec, []), spec, 1, ["step-graph"]) for m in (model, other)]
    assert keys[0] != keys[1] and os.path.isdir(cache / "exports" / keys[0])


def test_export_cache_keys_what_the_graph_computes(tmp_path, monkeypatch):
    """Equal tensors in another architecture (Tanh for ReLU: the same class, the same state_dict) key
    another export and give another image; an equal model built again reuses the first one's."""
    import dgn_engine.exporter.manifest as manifest

    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    real, calls = manifest.export_artifacts, []
    monkeypatch.setattr(manifest, "export_artifacts", lambda *a, **k: calls.append(1) or real(*a, **k))

    def model(activation):
        m = tiny_rgb()
        for i, layer in enumerate(m.features):
            if isinstance(layer, torch.nn.ReLU):
                m.features[i] = activation()
        return m

    settings = dict(mode="pixel", steps=3, seed=1, progress=False)
    relu = dgn.synthesize(model(torch.nn.ReLU), "class:1", **settings)[0].array
    tanh_model = model(torch.nn.Tanh)
    assert tanh_model.state_dict().keys() == tiny_rgb().state_dict().keys()
    tanh = dgn.synthesize(tanh_model, "class:1", **settings)[0].array
    assert len(calls) == 2 and not np.array_equal(relu, tanh)
    fresh = dgn.synthesize(model(torch.nn.Tanh), "class:1", **settings)[0].array
    assert len(calls) == 2  # built again, equal: the cached export serves it
    np.testing.assert_array_equal(tanh, fresh)


def test_export_stays_the_function_after_the_exporter_is_imported():
    """The torch side is the package dgn_engine.exporter: importing it never hides dgn.export."""
    import dgn_engine.exporter.manifest  # noqa: F401

    assert callable(dgn.export) and dgn.export.__module__ == "dgn_engine.api"


def test_what_synthesize_says(tmp_path, monkeypatch, capsys):
    """The first call says that it exports (tracing is silent for seconds) and names the gallery only
    where the folder outlives the call."""
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    settings = dict(mode="pixel", steps=2, progress=True)
    dgn.synthesize(tiny_rgb(), "class:1", **settings)
    said = capsys.readouterr().out
    assert "exporting this classifier's pixel mode to ONNX, once" in said and "gallery:" not in said
    dgn.synthesize(tiny_rgb(), "class:1", out=tmp_path / "kept", **settings)
    said = capsys.readouterr().out
    assert "exporting" not in said  # reused
    assert f"gallery: {tmp_path / 'kept' / 'index.html'}" in said


def test_contact_sheet_captions_wrap_instead_of_being_cut():
    from PIL import Image, ImageDraw

    from dgn_engine.engine.gallery import CAPTION_LINES, _wrap, contact_sheet

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert _wrap(draw, "T-shirt/top", 60) == ["T-shirt/top"]
    long = _wrap(draw, "0.5*class:9+channel:features.28:17+channel:features.28:18", 60)
    assert len(long) == CAPTION_LINES and long[-1].endswith("...")
    assert all(draw.textlength(line) <= 60 for line in long)
    tiles = [Image.new("RGB", (28, 28))] * 3
    sheet = contact_sheet(tiles, ["T-shirt/top", "Ankle boot", "a very long class name indeed"], tile=64)
    assert sheet.size == (3 * 64, 64 + 14 * CAPTION_LINES)  # room for the wrapped caption
