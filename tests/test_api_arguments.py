"""The Python API's one validation layer (dgn_engine/arguments.py): every public function refuses a bad
argument before any work, with one ArgumentError (a UsageError, as the CLI's) naming the argument, its
value and what it takes; a module the search cannot run through is refused before anything is written;
a cache folder that cannot serve gives one line."""

import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import dgn_engine as dgn
from dgn_engine import demo
from dgn_engine.api import export  # not dgn.export: once dgn_engine.exporter.* is imported, that name is the subpackage
from dgn_engine.arguments import ArgumentError
from dgn_engine.errors import UsageError
from tests.small_models import tiny_rgb

QUICK = dict(steps=2, seed=0, progress=False)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A cache of its own (nothing exported into it yet), so that a test can see what was written."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(path))
    return path


def _refused(call, *names, match=None) -> str:
    """`call()` raises ArgumentError, in one line, naming each of `names` as `name=`."""
    with pytest.raises(ArgumentError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for name in names:
        assert f"{name}=" in message, message
    if match is not None:
        assert match in message, message
    return message


def _written(*folders) -> list[str]:
    """Every file under `folders` (none where they do not exist)."""
    return [os.path.join(d, f) for folder in folders for d, _, files in os.walk(folder) for f in files]


# --- the examples of the issue: each used to fail deep in torch or numpy, or ran wrong ---


@pytest.mark.parametrize(
    "argument, value, expected",
    [
        ("image_size", 32.5, "an integer from 8 to 2,048"),
        ("image_size", "32", "an integer from 8 to 2,048"),
        ("mean", 0.5, "one finite number per channel"),
        ("lr", "abc", "a finite number > 0"),
        ("lam", [1], "a finite number >= 0"),
        ("snapshots", "3", "an integer from 1 to"),
        ("labels", 5, "a list of class names"),
        ("device", "tpu", "one of 'auto', 'cpu', 'cuda'"),
        ("batch", 0, "an integer from 1 to"),
    ],
)
def test_synthesize_refuses_the_issues_examples(empty_cache, argument, value, expected):
    message = _refused(lambda: dgn.synthesize(tiny_rgb(), "class:1", **{argument: value}, **QUICK), argument)
    assert message.startswith(f"synthesize({argument}={value!r}): expected {expected}"), message
    assert _written(empty_cache) == []


def test_engine_refuses_negative_threads_and_unknown_devices():
    art = demo.shipped_artifacts("untrained")
    _refused(lambda: dgn.Engine(art, threads=-1), "threads", match="Engine(threads=-1): expected an integer")
    _refused(lambda: dgn.Engine(art, device="tpu"), "device", match="'auto', 'cpu', 'cuda'")


def test_arguments_are_checked_before_any_work(empty_cache, tmp_path):
    """The module is not even run: the refusal comes before the classifier is looked at."""
    calls = []

    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_rgb()
            self.preprocessing = self.inner.preprocessing

        def forward(self, x):
            calls.append(1)
            return self.inner(x)

    out = tmp_path / "out"
    _refused(lambda: dgn.synthesize(Counted(), "class:1", image_size=32.5, out=out, **QUICK), "image_size")
    _refused(lambda: export(Counted(), out, batch=0, progress=False), "batch")
    assert calls == [] and not out.exists() and _written(empty_cache) == []


# --- more of each function's arguments ---


@pytest.mark.parametrize(
    "arguments, name",
    [
        (dict(steps=True), "steps"),  # a bool is not a number of steps
        (dict(steps=0), "steps"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(mode="untrainde"), "mode"),
        (dict(backend="onnx"), "backend"),
        (dict(precision="float16"), "precision"),
        (dict(channels="rgb"), "channels"),
        (dict(std=(0.5, 0.0, 0.5)), "std"),
        (dict(mean=(0.5, 0.5)), "mean"),
        (dict(mean="0.5"), "mean"),
        (dict(g_width=-1.0), "g_width"),
        (dict(progress="yes"), "progress"),
        (dict(display="pretty"), "display"),
        (dict(ray=False), "ray"),
        (dict(workers=0), "workers"),
        (dict(weights=3), "weights"),
        (dict(out=3), "out"),
        (dict(momentum=1.0), "momentum"),
        (dict(target_leak=2), "target_leak"),
        (dict(noise_sigma="loud"), "noise_sigma"),
        (dict(noise_sigma=float("nan")), "noise_sigma"),
        (dict(transforms="jitter=a"), "transforms"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(pick="worst"), "pick"),
        (dict(keep="10"), "keep"),
        (dict(paper="yes"), "paper"),
        (dict(labels="cats.txt"), "labels"),
    ],
)
def test_synthesize_argument_types(empty_cache, arguments, name):
    _refused(lambda: dgn.synthesize(tiny_rgb(), "class:1", **{**QUICK, **arguments}), name)
    assert _written(empty_cache) == []


def test_numbers_from_numpy_and_torch_scalars_are_numbers(empty_cache):
    """What a notebook computes is taken as the number it is: refused here only by a later check."""
    _refused(
        lambda: dgn.synthesize(
            tiny_rgb(),
            "class:1",
            image_size=np.int64(32),
            lr=np.float32(0.01),
            lam=torch.tensor(0.01),
            mean=np.array([0.5, 0.5, 0.5]),
            spectrum="photos",  # in untrained mode: the check between arguments refuses it
            **QUICK,
        ),
        "spectrum",
        match="use mode='maco'",
    )


def test_checks_between_arguments(empty_cache):
    model = tiny_rgb()
    cases = [
        (dict(precision="float64"), "precision", "backend='torch' only"),
        (dict(workers=2), "workers", "add ray=True"),
        (dict(ray=True, backend="torch"), "ray", "runs exported graphs"),
        (dict(mode="untrained", decoder="d.pt"), "decoder", "mode='pretrained'"),
        (dict(mode="pixel", g_width=0.5), "g_width", "pixel mode has no G"),
        (dict(spectrum="photos"), "spectrum", "mode='maco'"),
        (dict(mean=(0.5,), std=(0.2, 0.2, 0.2)), "std", "where mean has 1"),
        (dict(channels="L", mean=(0.5, 0.5, 0.5)), "mean", "expected 1"),
        (dict(weights="w.pth"), "weights", "load them into the module yourself"),
    ]
    for arguments, name, match in cases:
        _refused(lambda a=arguments: dgn.synthesize(model, "class:1", **a, **QUICK), name, match=match)
    assert _written(empty_cache) == []


def test_unknown_names_and_positions(empty_cache):
    message = _refused(lambda: dgn.synthesize(tiny_rgb(), "class:1", stepz=3), "stepz", match="unknown setting")
    assert "known: paper, steps" in message
    with pytest.raises(ArgumentError, match=r"synthesize\(\) takes at most 2 arguments by position"):
        dgn.synthesize(tiny_rgb(), "class:1", "untrained")
    with pytest.raises(ArgumentError, match=r"synthesize\(\) needs the argument targets"):
        dgn.synthesize(tiny_rgb())
    with pytest.raises(ArgumentError, match=r"grid\(tiles=3\): unknown argument; known: results, columns, tile"):
        dgn.grid([], tiles=3)


def test_model_and_targets(empty_cache):
    _refused(lambda: dgn.synthesize(42, "class:1", **QUICK), "model", match="torch.nn.Module")
    _refused(lambda: dgn.synthesize(tiny_rgb(), [], **QUICK), "targets", match="no targets")
    _refused(lambda: dgn.synthesize(tiny_rgb(), 3, **QUICK), "targets")
    _refused(lambda: dgn.synthesize(tiny_rgb(), [[1]], **QUICK), "targets", match="not a list")
    _refused(lambda: dgn.synthesize(tiny_rgb(), "clas:3", **QUICK), "targets")


def test_export_arguments(empty_cache, tmp_path):
    out = tmp_path / "art"
    model = tiny_rgb()
    _refused(lambda: export(model, out, batch=0), "batch")
    _refused(lambda: export(model, out, taps=[1]), "taps")
    _refused(lambda: export(model, out, backends=["torch"]), "backends", match="'step-graph', 'training-api'")
    _refused(lambda: export(model, out, image_size=32.5), "image_size")
    _refused(lambda: export(model, out, stepz=4), "stepz", match="unknown setting")
    _refused(lambda: export(model, None), "out")
    (tmp_path / "file").write_text("x")
    _refused(lambda: export(model, tmp_path / "file"), "out", match="is a file, not a folder")
    _refused(lambda: export(model, tmp_path / "file" / "art"), "out", match="is a file")
    assert not out.exists() and _written(empty_cache) == []


def test_engine_arguments(tmp_path):
    art = demo.shipped_artifacts("untrained")
    _refused(lambda: dgn.Engine(42), "artifacts", match="an artifacts folder")
    _refused(lambda: dgn.Engine(art, precision="float64"), "precision", match="'float32', 'tf32'")
    _refused(lambda: dgn.Engine(art, backend="torch"), "backend")
    _refused(lambda: dgn.Engine(art, workers=2), "workers", match="add ray=True")
    _refused(lambda: dgn.Engine(art, ray=0), "ray")
    engine = dgn.Engine(art, device="cpu")
    out = tmp_path / "out"
    _refused(lambda: engine.run("class:1", out, steps="3"), "steps", match="Engine.run(steps='3')")
    _refused(lambda: engine.run("class:1", out, labels=5), "labels")
    _refused(lambda: engine.run("class:1", out, display="pretty"), "display")
    _refused(lambda: engine.run("class:1", out, lr=-1), "lr")
    _refused(lambda: engine.run("class:1", out, stepz=3), "stepz", match="unknown setting")
    _refused(lambda: engine.run([], out), "targets")
    assert not out.exists()


def test_an_artifacts_folder_fixes_the_input_format(tmp_path):
    art = demo.shipped_artifacts("untrained")
    _refused(lambda: dgn.synthesize(art, "class:1", image_size=64, **QUICK), "image_size", match="fix image_size")
    dgn.synthesize(art, "class:1", image_size=32, **QUICK)  # what agrees with the artifacts is taken
    _refused(lambda: dgn.synthesize(art, "class:1", batch=2, **QUICK), "batch", match="run batches of 5")
    _refused(
        lambda: dgn.synthesize(art, "class:1", mode="pretrained", **QUICK),
        "mode",
        match="are for mode='untrained', not pretrained",
    )


def test_an_artifacts_folder_on_the_torch_reference_is_its_sources(tmp_path):
    """backend='torch' on an artifacts folder runs the eager reference of the files its manifest names:
    the same images as the step graph, to float32 rounding (verify's own check of these graphs)."""
    art = demo.shipped_artifacts("untrained")
    [graph] = dgn.synthesize(art, "class:1", **QUICK)
    [eager] = dgn.synthesize(art, "class:1", backend="torch", **QUICK)
    assert eager.record["provenance"]["backend"] == "torch" and graph.record["provenance"]["backend"] == "step-graph"
    # a PNG is 8 bits: float32 rounding moves a pixel across a level now and then, never by more than one
    assert np.abs(eager.array.astype(int) - graph.array.astype(int)).max() <= 1


def test_grid_arguments():
    _refused(lambda: dgn.grid([]), "results", match="non-empty list of Result")
    _refused(lambda: dgn.grid(["a.png"]), "results")
    _refused(lambda: dgn.grid([], columns=0), "results", "columns")  # every bad argument is named, in one line
    message = _refused(lambda: dgn.grid(["a.png"], columns=0, tile="big"), "results", "columns", "tile")
    assert message.count("grid(") == 3


def test_public_helpers_are_checked_too():
    from dgn_engine.api import export_key, mode_spec

    _refused(lambda: mode_spec(object(), "untrained"), "clf")
    _refused(lambda: export_key(None, "spec", 1, ["step-graph"]), "spec", match="RunSpec")


def test_one_error_type_for_the_api_and_the_cli():
    """An ArgumentError is a UsageError: the CLI prints it as one line and exits 2, as its own."""
    assert issubclass(ArgumentError, UsageError) and ArgumentError.exit_code == 2


# --- the module: refused before the export, and before anything is written, where it cannot be differentiated ---


class _Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_rgb()
        self.preprocessing = self.inner.preprocessing


class NoGradForward(_Wrapped):
    def forward(self, x):
        with torch.no_grad():
            return self.inner(x)


class IntegerOutputs(_Wrapped):
    def forward(self, x):
        return (self.inner(x) * 100).long()


def _meta_module():
    return tiny_rgb().to("meta")


@pytest.mark.parametrize(
    "make, says",
    [
        (NoGradForward, "does not depend differentiably on its input"),
        (IntegerOutputs, "returns int64 outputs, which have no gradient"),
        (_meta_module, "on the meta device"),
    ],
)
@pytest.mark.parametrize("backend", ["step-graph", "torch"])
def test_a_module_that_cannot_be_differentiated_is_refused_before_anything_is_written(
    empty_cache, tmp_path, make, says, backend
):
    out = tmp_path / "out"
    message = _refused(
        lambda: dgn.synthesize(make(), "class:1", backend=backend, out=out, **QUICK), "model", match=says
    )
    assert message.startswith("synthesize(model=<")
    _refused(lambda: export(make(), tmp_path / "art", progress=False), "model", match=says)
    assert not out.exists() and not (tmp_path / "art").exists() and _written(empty_cache) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_float16_or_float64_module_runs_in_float32_with_a_warning(empty_cache, tmp_path, dtype):
    from dgn_engine.exporter.classifiers import classifier_from_module

    model = tiny_rgb().to(dtype)
    with pytest.warns(UserWarning, match=f"{str(dtype)[6:]} tensors; D runs in float32"):
        clf = classifier_from_module(model)
    assert all(p.dtype == torch.float32 for p in clf.module.parameters())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        [result] = dgn.synthesize(model, "class:1", backend="torch", out=tmp_path / "o", **QUICK)
    assert any("runs in float32" in str(w.message) for w in seen)
    assert result.array.shape == (32, 32, 3)
    assert all(p.dtype == dtype for p in model.parameters())  # the caller's module is left as it was


# --- the export cache ---


def test_a_cache_that_is_a_file_gives_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(cache))
    with pytest.raises(UsageError) as caught:
        dgn.synthesize(tiny_rgb(), "class:1", out=tmp_path / "out", **QUICK)
    message = str(caught.value)
    assert "\n" not in message and "export cache" in message and "is a file" in message, message
    assert "DGN_ENGINE_CACHE" in message and not (tmp_path / "out").exists()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "exports").write_text("in the way")
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "folder"))
    with pytest.raises(UsageError, match="is a file, not a folder; set DGN_ENGINE_CACHE"):
        dgn.synthesize(tiny_rgb(), "class:1", **QUICK)


def test_a_read_only_cache_gives_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    monkeypatch.setenv("DGN_ENGINE_CACHE", str(cache))
    if os.geteuid() == 0:  # root writes anywhere: make the check see the folder as any other user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(cache) else real(p, mode, **kw))
    try:
        with pytest.raises(UsageError) as caught:
            dgn.synthesize(tiny_rgb(), "class:1", out=tmp_path / "out", **QUICK)
        message = str(caught.value)
        assert "\n" not in message and "read-only" in message and "DGN_ENGINE_CACHE" in message, message
        assert os.listdir(cache) == []
    finally:
        cache.chmod(0o755)


def test_a_validation_error_from_the_work_itself_is_not_taken_for_a_bad_argument():
    """Only the arguments' own validation becomes an ArgumentError: a pydantic error raised by the
    function's work (a record read back, say) passes through as it was."""
    import pydantic

    from dgn_engine.arguments import Steps, checked

    class Record(pydantic.BaseModel):
        n: int

    @checked
    def work(steps: Steps):
        return Record(n="many")

    with pytest.raises(pydantic.ValidationError, match="Record"):
        work(3)
    _refused(lambda: work(0), "steps", match="work(steps=0)")
