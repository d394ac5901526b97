"""One road from a request to its results, for the CLI and the Python API alike.

A `Request` holds every choice a user makes, grouped as D, G, the method and how it runs, with its
targets parsed once. `resolve` decides in one place what the request leaves open: where the graphs come
from (an artifacts folder, an export cached once per model, or the torch reference), D (loaded once),
the spec (built once, after all-classes is expanded), and every check between the choices. `run` runs
the job into the results folder; `results` reads it back; `export` writes an artifacts folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import demo
from .arguments import folder_problem, refuse, shown
from .errors import UsageError, setting
from .export_cache import cached_export, check_cache, shipped_demo
from .generators import OPTIONS, option_problem
from .spec import RunSpec, default_spec, with_settings
from .targets import OUTPUT, Target, all_classes, check_target

MOST_PER_BATCH = 8  # targets a cached export optimises together, at most (its batches are then equal)
# On a CPU a large D's step is compute-bound and larger batches only cost cache: EfficientNet-Lite1 at 240 px
# took 41.9, 43.5 and 47.9 ms per target and step at 2, 4 and 8 (bench/RESULTS.md). Small inputs keep 8,
# where each call's fixed cost is what batching saves.
MOST_PER_BATCH_CPU_LARGE, LARGE_INPUT = 4, 128


@dataclass(frozen=True)
class ClassifierChoice:
    """D: a torch module, a TorchScript or ONNX file, a name ("demo", "vgg16", "module:factory"), or an
    artifacts folder (a path or a loaded Artifacts), and its input format where D cannot tell."""

    model: Any = demo.NAME
    weights: str | None = None
    image_size: int | None = None
    channels: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    keep_softmax: bool = False
    classifier: str | None = None  # beside an artifacts folder: the name or file D was exported from


@dataclass(frozen=True)
class GeneratorChoice:
    """G: the mode (None: the artifacts' mode, else default_mode's) and the one setting that builds it
    (generators/: each mode takes at most one of these)."""

    mode: str | None = None
    decoder: str | None = None
    g_width: float | None = None
    spectrum: str | None = None


@dataclass(frozen=True, kw_only=True)
class Execution:
    """How and where it runs, and what it writes."""

    backend: str | None = None  # None: the artifacts' first, else step-graph
    backends: tuple[str, ...] = ("step-graph",)  # what an export writes
    device: str = "auto"
    batch: int | None = None
    precision: str = "float32"
    threads: int | None = None
    ray: Any = None  # True or "local", "auto", "HOST:PORT", "ray://HOST:PORT"
    workers: int | None = None
    shard: tuple[int, int] | None = None
    out: str | None = None  # None: a temporary folder (results only)
    force: bool = False
    display: str | None = None  # None: the demo's own, else model
    progress: bool = True
    log: Callable[[str], None] | None = None  # None: print where progress is shown


@dataclass(frozen=True)
class Request:
    """Every choice of one call. `method`: spec.with_settings's settings that were given; `caller`: the
    Python function whose arguments these are (its refusals name them), None for the CLI (flags)."""

    d: ClassifierChoice = ClassifierChoice()
    g: GeneratorChoice = GeneratorChoice()
    method: dict = field(default_factory=dict)
    execution: Execution = Execution()
    targets: tuple[Target, ...] = ()
    all_classes: bool = False
    taps: tuple[str, ...] = ()  # layers an export taps besides the targets'
    caller: str | None = None

    def refuse(self, name: str, value: Any, problem: str):
        """One line naming the setting: the Python call's argument and its value, or the CLI's flag."""
        if self.caller:
            refuse(self.caller, name, value, problem)
        raise UsageError(problem if setting(name) in problem else f"{setting(name)} {_cli_value(value)}: {problem}")

    @property
    def log(self) -> Callable[[str], None]:
        return self.execution.log or (print if self.execution.progress else _quiet)


@dataclass
class Resolved:
    """What a request comes to: the spec, its targets, and what runs them."""

    spec: RunSpec
    targets: list[Target]
    batch: int
    display: str
    labels: list[str] | None
    backend: str
    art: Any = None  # the artifacts that run (None: the torch reference)
    coupled: Any = None  # G + D for the torch reference


def _quiet(*_):
    pass


_s = setting


def _cli_value(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else shown(value).strip("'")


def _is_demo(model) -> bool:
    return isinstance(model, str) and model == demo.NAME


def _names_artifacts(model) -> bool:
    from .artifacts import MANIFEST, Artifacts

    if isinstance(model, Artifacts):
        return True
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(model), MANIFEST))


def _given_artifacts(model):
    """The artifacts folder `model` names (loaded), or None where it is a classifier."""
    from .artifacts import Artifacts, load_artifacts

    if not _names_artifacts(model):
        return None
    return model if isinstance(model, Artifacts) else load_artifacts(os.fspath(model))


def default_mode(model, decoder=None) -> str:
    """The mode where none is chosen (an artifacts folder has its own): pretrained where a decoder is
    given and for the demo, which ships its decoder; untrained, which needs no decoder, for any other D."""
    return "pretrained" if decoder is not None or _is_demo(model) else "untrained"


def check_together(req: Request) -> None:
    """What one choice makes of another, before any work."""
    d, g, ex = req.d, req.g, req.execution
    if ex.workers is not None and ex.ray is None:
        req.refuse(
            "workers",
            ex.workers,
            f"{_s('workers')} sets how many Ray workers run the batches; add {_s('ray', True)}",
        )
    if ex.ray is not None and ex.backend == "torch":
        req.refuse("ray", ex.ray, f"{_s('ray')} runs exported graphs on its workers; use {_s('backend', 'step-graph')}")
    if ex.precision == "float64" and ex.backend != "torch":
        req.refuse(
            "precision",
            "float64",
            f"{_s('precision', 'float64')} runs on {_s('backend', 'torch')} only; the {ex.backend or 'step-graph'} "
            "backend runs float32 or tf32",
        )
    if d.weights is not None and not isinstance(d.model, (str, os.PathLike)):
        why = f"{_s('weights')} are for a classifier given by name; load them into the module yourself"
        req.refuse("weights", d.weights, why)
    mode = g.mode or (None if _names_artifacts(d.model) else default_mode(d.model, g.decoder))
    for option in OPTIONS:
        value = getattr(g, option)
        if value is not None and mode is not None and (problem := option_problem(mode, option)):
            req.refuse(option, value, problem)
    if d.mean is not None and d.std is not None and len(d.mean) != len(d.std):
        why = f"{_s('std')} has {len(d.std)} values where {_s('mean')} has {len(d.mean)}; give one per channel"
        req.refuse("std", d.std, why)
    n = None if d.channels is None else (1 if d.channels == "L" else 3)
    for name in ("mean", "std"):
        values = getattr(d, name)
        if n is not None and values is not None and len(values) != n:
            why = f"{_s(name)} has {len(values)} values for {_s('channels', d.channels)}; expected {n}"
            req.refuse(name, values, why)
    if ex.out is not None and (problem := folder_problem(ex.out)):
        why = f"the output folder {ex.out!r} {problem}; give a writable folder with {_s('out')} (created if missing)"
        req.refuse("out", ex.out, why)


def _check_fixed(req: Request, art, backend: str) -> None:
    """The artifacts fix D, G and the input format: a choice that says otherwise is refused, not ignored."""
    d, g, sources, pp = req.d, req.g, art.manifest["sources"], art.preprocessing

    def same_file(given, recorded):  # a name (vgg16, demo, module:factory) or a path
        both_files = recorded is not None and os.path.exists(given) and os.path.exists(recorded)
        return given == recorded or (both_files and os.path.samefile(given, recorded))

    fixed = {
        "model": (d.classifier, lambda v: same_file(v, sources.get("classifier"))),
        "mode": (g.mode, lambda v: v == art.mode),
        "weights": (d.weights, lambda v: same_file(v, sources.get("weights"))),
        "decoder": (g.decoder, lambda v: same_file(v, sources.get("decoder"))),
        "image_size": (d.image_size, lambda v: v == pp.image_size),
        "channels": (d.channels, lambda v: v == pp.order),
        "mean": (d.mean, lambda v: tuple(v) == tuple(pp.mean)),
        "std": (d.std, lambda v: tuple(v) == tuple(pp.std)),
        "g_width": (g.g_width, lambda v: v == sources.get("g_width")),
        "spectrum": (g.spectrum, lambda v: same_file(v, sources.get("spectrum"))),
        "keep_softmax": (d.keep_softmax or None, lambda v: v == sources.get("keep_softmax", False)),
        "batch": (req.execution.batch if backend != "torch" else None, lambda v: v == art.batch),
    }
    for name, (value, agrees) in fixed.items():
        if value is not None and not agrees(value):
            what = {
                "batch": f"run batches of {art.batch}",
                "mode": f"are for {_s('mode', art.mode)}, not {value}",
            }.get(name, f"fix {_s(name)} (they were exported with another value)")
            again = f"leave out {_s(name)}, or export again with {_s(name, _cli_value(value))}"
            req.refuse(name, value, f"the artifacts in {art.path!r} {what}; {again}")


def resolve(req: Request) -> Resolved:
    """The request decided: its source, D, the spec and its targets, each checked once."""
    check_together(req)
    ex = req.execution
    art = _given_artifacts(req.d.model)
    backend = ex.backend or (art.backends[0] if art else "step-graph")
    if backend == "training-api":
        from .engine.backends.training_api import training_bindings

        training_bindings()  # installed, or one line saying how
    if art is not None:
        _check_fixed(req, art, backend)
        if backend != "torch":
            art.require(backend)
            return _finish(req, art.spec, art.layout, backend, art=art, display="model", batch=art.batch)
        clf = _classifier_of_artifacts(req, art)
        return _from_classifier(req, clf, art.spec, backend, display="model")
    mode = req.g.mode or default_mode(req.d.model, req.g.decoder)
    if backend != "torch":
        shipped = _shipped_demo(req, mode, backend)
        if shipped is not None:
            return _finish(
                req, shipped.spec, shipped.layout, backend, art=shipped, display=demo.DISPLAY, batch=demo.BATCH
            )
        check_cache()
    clf = _classifier(req)
    base = demo.spec(mode) if clf.name == demo.NAME else default_spec(mode, clf.preprocessing.image_size)
    return _from_classifier(req, clf, base, backend, display=demo.DISPLAY if clf.name == demo.NAME else "model")


def _from_classifier(req: Request, clf, base: RunSpec, backend: str, display: str) -> Resolved:
    """G coupled to the loaded D; for an engine backend, the artifacts exported once into the cache."""
    from .exporter.coupled import couple

    found = _targets(req, clf.layout()[OUTPUT][0])
    spec = with_settings(base, found, **req.method)
    is_demo = clf.name == demo.NAME
    layers = sorted({layer for t in found for layer in t.layers})
    taps = list(dict.fromkeys(list(demo.TAPS) + layers)) if is_demo and backend != "torch" else layers
    g = req.g
    coupled = couple(clf, spec, taps, g.decoder, g.g_width, g.spectrum)
    names = clf.layer_names()
    _check_targets(req, found, coupled.layout, names)
    if backend == "torch":
        return _resolved(req, spec, found, backend, display, batch=req.execution.batch or 1, coupled=coupled)
    on_cpu = req.execution.ray is None and _runs_on_cpu(req.execution.device)
    cpu_input_size = clf.preprocessing.image_size if on_cpu else None
    batch = req.execution.batch or default_batch(len(found), is_demo, cpu_input_size)
    art = cached_export(coupled, base, spec, batch, backend, _sources(req, clf, coupled.mode), req.log)
    return _resolved(req, spec, found, backend, display, batch=batch, art=art)


def default_batch(n_targets: int, is_demo: bool = False, cpu_input_size: int | None = None) -> int:
    """Targets per step of a cached export: the demo's own, else equal batches of at most 8, or of at
    most 4 on a CPU (cpu_input_size: D's input size there) for inputs of 128 px and more."""
    if is_demo:
        return demo.BATCH
    large_on_cpu = cpu_input_size is not None and cpu_input_size >= LARGE_INPUT
    most = MOST_PER_BATCH_CPU_LARGE if large_on_cpu else MOST_PER_BATCH
    return -(-n_targets // -(-n_targets // most))


def _runs_on_cpu(device: str) -> bool:
    """Whether an engine backend on this device runs on the CPU (auto: where onnxruntime has no GPU)."""
    if device in ("cpu", "cuda"):
        return device == "cpu"
    from .engine.backends.onnx_session import providers

    try:
        return providers(device)[1] == "cpu"
    except UsageError:  # no onnxruntime here: the run refuses later, with its own reason
        return False


def _finish(req: Request, base: RunSpec, layout, backend: str, *, art, display: str, batch: int) -> Resolved:
    """A request on exported artifacts: its targets against their layout and taps, its spec over theirs."""
    found = _targets(req, layout[OUTPUT][0])
    for t in found:
        art.require_taps(t)
    _check_targets(req, found, layout, art.manifest["taps"])
    spec = with_settings(base, found, **req.method)
    art.check_spec(spec)
    return _resolved(req, spec, found, backend, display, batch=batch, art=art)


def _resolved(req: Request, spec, found, backend, display, *, batch, art=None, coupled=None) -> Resolved:
    labels = list(req.d.labels) if req.d.labels is not None else None
    return Resolved(spec, found, batch, req.execution.display or display, labels, backend, art, coupled)


def _targets(req: Request, n_classes: int) -> list[Target]:
    found = list(dict.fromkeys((all_classes(n_classes) if req.all_classes else []) + list(req.targets)))
    if not found:
        raise UsageError(
            f"say what to synthesise: targets such as 'class:3' or {setting('all_classes', True)}"
            if req.caller is None
            else "no targets: give e.g. 'class:3', dgn.Class(3) or dgn.all_classes(10)"
        )
    return found


def _check_targets(req: Request, found: list[Target], layout, layers: list[str]) -> None:
    for t in found:
        check_target(t, layout, layers)
    labels, n = req.d.labels, layout[OUTPUT][0]
    if labels is not None and len(labels) != n:
        req.refuse("labels", labels, f"{_s('labels')} has {len(labels)} names for a classifier of {n} classes")


def _classifier(req: Request):
    """D from the request's model in any of its forms, loaded once; refused (naming the model) where the
    search cannot run through it."""
    torch_run = req.execution.backend == "torch"
    _need_torch(req, _s("backend", "torch") if torch_run else "a classifier (exported once into the cache)")
    from .exporter.classifiers import classifier_from_module, gradient_problem, load_classifier, module_problem

    d, model = req.d, req.d.model
    labels = list(d.labels) if d.labels is not None else None
    fmt = dict(image_size=d.image_size, channels=d.channels, mean=d.mean, std=d.std, keep_softmax=d.keep_softmax)
    if isinstance(model, (str, os.PathLike)):
        clf = load_classifier(os.fspath(model), d.weights, seed=req.method.get("seed") or 0, **fmt)
        if labels is not None:
            clf.labels = labels
    else:
        problem = module_problem(model)
        if problem:
            req.refuse("model", model, problem)
        clf = classifier_from_module(model, labels=labels, **fmt)
    problem = gradient_problem(clf)
    if problem:
        req.refuse("model", model, problem)
    return clf


def _classifier_of_artifacts(req: Request, art):
    """The torch reference of artifacts: D built again from the files their manifest names."""
    from .exporter.coupled import Sources

    s = Sources.from_json(art.manifest["sources"])
    d = ClassifierChoice(s.classifier, s.weights, s.image_size, s.channels, s.mean, s.std, req.d.labels, s.keep_softmax)
    g = GeneratorChoice(s.mode, s.decoder, s.g_width, s.spectrum)
    return _classifier(replace(req, d=d, g=g, method={**req.method, "seed": s.seed}))


def _need_torch(req: Request, what: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs torch: pip install 'dgn-engine[export]'") from None


def _shipped_demo(req: Request, mode: str, backend: str):
    """The demo's shipped artifacts where no export can be made here (no torch); None where torch is
    installed (an export is made, or found in the cache)."""
    if not _is_demo(req.d.model):
        return None
    try:
        import torch  # noqa: F401

        return None
    except ImportError:
        pass
    d, g = req.d, req.g
    spec = with_settings(demo.spec(mode), (), **req.method)
    layers = {layer for t in req.targets for layer in t.layers}
    format_given = any(
        v is not None for v in (d.weights, d.image_size, d.channels, d.mean, d.std, g.decoder, g.g_width)
    )
    shipped = shipped_demo(mode, backend, spec, req.execution.batch or demo.BATCH, layers)
    if shipped is None or format_given:
        raise UsageError(
            "the package ships the demo for the step-graph backend and its default structure only; other "
            "choices need it exported, which needs torch: pip install 'dgn-engine[export]'"
        )
    return shipped


def _sources(req: Request, clf, mode: str):
    """What the export records it was made from (absolute paths), for the model in any of its forms."""
    from .exporter.coupled import Sources

    d, g = req.d, req.g
    name = os.fspath(d.model) if isinstance(d.model, (str, os.PathLike)) else clf.name
    seed = req.method.get("seed") or 0
    args = (d.weights, d.image_size, d.channels, d.mean, d.std, g.decoder, g.g_width, seed, g.spectrum, d.keep_softmax)
    return Sources(mode, name, *args).absolute()


@contextmanager
def runner(req: Request, r: Resolved, started=None):
    """What runs the batches: Ray workers, or here the backend (`started`: one already made for r.art)."""
    from .engine.runners import LocalRunner

    ex = req.execution
    if ex.ray is not None:
        from .engine.ray_runner import RayRunner

        batches = -(-len(r.targets) // r.batch)
        most = -(-batches // ex.shard[1]) if ex.shard else batches
        address = None if ex.ray is True or ex.ray == "local" else ex.ray
        with RayRunner(r.art, r.backend, address, ex.workers, ex.device, ex.threads, ex.precision, most, req.log) as rr:
            yield rr
        return
    if r.coupled is not None:
        from .engine.backends.torch_reference import TorchBackend

        if ex.threads:
            import torch

            torch.set_num_threads(ex.threads)
        backend = TorchBackend(r.coupled, ex.precision, ex.device)
    else:
        from .engine.backends import engine_backend

        backend = started or engine_backend(r.backend, r.art, ex.device, ex.threads, ex.precision)
    yield LocalRunner(backend)


def run(req: Request, started=None) -> dict:
    """The request's resumable job into its results folder: the job's counts and, where it (re)built
    the gallery, the path of its index.html (printed where the folder is kept)."""
    return _job(req, resolve(req), req.execution.out, started)


def _job(req: Request, r: Resolved, out: str, started=None) -> dict:
    from .engine.jobs import Job, JobOptions

    ex = req.execution
    options = JobOptions(r.batch, r.display, ex.force, r.labels, ex.progress, ex.shard)
    with runner(req, r, started) as where:
        done = Job(where, r.spec, out, options, r.targets).run(log=req.log)
    if done.get("gallery") and req.execution.out is not None:
        req.log(f"gallery: {done['gallery']}")
    return done


def results(req: Request, started=None):
    """The request run (into a temporary folder where it names none) and read back as Result objects."""
    from .results import load_results

    r = resolve(req)
    out = req.execution.out
    folder = os.fspath(out) if out is not None else tempfile.mkdtemp(prefix="dgn-engine-")
    try:
        _job(req, r, folder, started)
        return load_results(folder, r.targets, keep_paths=out is not None)
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


def export(req: Request):
    """The artifacts folder `req.execution.out` for the request's D and G: the loaded Artifacts."""
    check_together(req)
    ex, g = req.execution, req.g
    if _given_artifacts(req.d.model) is not None:
        req.refuse("model", req.d.model, "is an artifacts folder already; export the classifier it was made from")
    _need_torch(req, "export")
    from .exporter.coupled import couple
    from .exporter.manifest import export_artifacts, prepare_out
    from .exporter.step_graph import check_backends

    mode = g.mode or default_mode(req.d.model, req.g.decoder)
    clf = _classifier(req)
    base = demo.spec(mode) if clf.name == demo.NAME else default_spec(mode, clf.preprocessing.image_size)
    spec = with_settings(base, (), **req.method)
    check_backends(spec, ex.backends)
    if "training-api" in ex.backends:
        from .exporter.training_api import training_api

        training_api()  # installed, or one line saying how
    prepare_out(ex.out, ex.force)
    if ex.threads:
        import torch

        torch.set_num_threads(ex.threads)
    taps = list(dict.fromkeys(list(req.taps) + sorted({layer for t in req.targets for layer in t.layers})))
    coupled = couple(clf, spec, taps, g.decoder, g.g_width, g.spectrum)
    sources = _sources(req, clf, mode)
    return export_artifacts(
        coupled,
        spec,
        sources,
        ex.batch or 1,
        os.fspath(ex.out),
        force=ex.force,
        log=req.log,
        backends=list(ex.backends),
    )
