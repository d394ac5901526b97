"""The Python API, for notebooks and scripts: one call from a classifier to its preferred inputs.

    import dgn_engine as dgn
    results = dgn.synthesize(model, ["class:3", dgn.Class(9) + 0.5 * dgn.Channel("layer3", 17)])
    dgn.grid(results)

`synthesize` takes D as an in-memory torch module, a TorchScript or ONNX file, a name ("vgg16" with
weights=, "demo", "module:factory") or an artifacts folder. With the step-graph backend it exports G + D
once into a cache keyed by the digests of D's and G's tensors and the settings the graph fixes, so the
next call on the same model starts at once. `Engine` runs an artifacts folder and needs no torch.
The CLI builds on the same pieces (spec.with_settings, the job, the results folder).

Every public function here checks its arguments before any work (arguments.checked: pydantic's
validate_call over the types of arguments.py): a bad one raises arguments.ArgumentError, a UsageError
naming the call, the argument, its value and what is expected, e.g.
`synthesize(image_size=32.5): expected an integer from 8 to 2,048`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from typing_extensions import Unpack

from .arguments import (
    ArgumentError,
    ArtifactsFolder,
    Backend,
    Batch,
    Channels,
    ClassifierArg,
    Columns,
    Device,
    Display,
    EngineBackend,
    EngineBackends,
    EnginePrecision,
    ExportSettings,
    Flag,
    GWidth,
    ImageSize,
    Labels,
    Layers,
    Log,
    Mean,
    MethodSettings,
    Mode,
    Model,
    Path,
    Precision,
    Ray,
    Results,
    RunSettings,
    Seed,
    Shard,
    Spec,
    Std,
    Steps,
    Taps,
    Targets,
    Threads,
    Tile,
    Weights,
    Workers,
    check_out,
    checked,
    folder_problem,
    refuse,
)
from .errors import UsageError
from .results import Result, load_results
from .spec import default_spec, with_settings
from .targets import OUTPUT, Target, as_target, check_target


def _targets(targets) -> list[Target]:
    if isinstance(targets, (str, Target)):
        targets = [targets]
    found = list(dict.fromkeys(as_target(t) for t in targets))
    if not found:
        raise UsageError("no targets: give e.g. 'class:3', dgn.Class(3) or dgn.all_classes(10)")
    return found


def _quiet(*_):
    pass


def _run(
    runner,
    spec,
    targets: list[Target],
    out,
    *,
    batch: int,
    labels,
    display: str,
    force: bool,
    progress: bool,
    layers: list[str],
) -> list[Result]:
    """The results job over `runner` (or a backend), into `out` (a temporary folder when None), read back."""
    folder = out if out is not None else tempfile.mkdtemp(prefix="dgn-engine-")
    try:
        done = run_job(
            runner,
            spec,
            targets,
            str(folder),
            batch=batch,
            labels=labels,
            display=display,
            force=force,
            progress=progress,
            layers=layers,
        )
        if out is not None and progress and done.get("gallery"):  # a temporary folder's page is gone on return
            print(f"gallery: {done['gallery']}")
        return load_results(str(folder), targets, keep_paths=out is not None)
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


@checked
def run_job(
    runner: Any,
    spec: Spec,
    targets: Targets,
    out: Path,
    *,
    batch: Batch,
    labels: Labels | None,
    display: Display | None,
    force: Flag,
    progress: Flag,
    layers: Layers,
    log: Log | None = None,
    shard: Shard | None = None,
) -> dict:
    """Check the targets and labels against D, then the resumable job writing `out`: what `dgn-engine run`
    and the functions above share once they hold a runner (engine.runners: here, or Ray) or a backend.
    Returns the job's counts and, where it (re)built the gallery, the path of its index.html."""
    from .engine.jobs import Job, JobOptions
    from .engine.runners import LocalRunner

    if not hasattr(runner, "results"):
        runner = LocalRunner(runner)
    for t in targets:
        check_target(t, runner.layout, layers)
    if labels is not None and len(labels) != runner.layout[OUTPUT][0]:
        raise ArgumentError(f"labels: {len(labels)} names for a classifier of {runner.layout[OUTPUT][0]} classes")
    options = JobOptions(
        batch=batch,
        display=display,
        force=force,
        labels=list(labels) if labels else None,
        progress=progress,
        shard=shard,
    )
    return Job(runner, spec, out, options).run(log=log or (print if progress else _quiet))


@checked
def ray_runner(
    art: Any,
    backend: EngineBackend,
    ray: Ray,
    workers: Workers | None = None,
    device: Device = "auto",
    threads: Threads | None = None,
    precision: EnginePrecision = "float32",
    **kw: Any,
):
    """A RayRunner (imports Ray). ray: True or "local" (a local Ray, or the one ray.init() started),
    "auto", "ray://HOST:PORT" or "HOST:PORT" (a cluster)."""
    from .engine.ray_runner import RayRunner

    address = None if ray is True or ray == "local" else ray
    return RayRunner(art, backend, address, workers, device, threads, precision, **kw)


def _run_artifacts(art, backend: str, spec, found, out, *, ray, workers, device, threads, precision, local, **job):
    """_run over an artifacts folder: on Ray workers when `ray`, else on the backend `local()` makes."""
    if ray is None:
        return _run(local(), spec, found, out, batch=art.batch, **job)
    log = print if job["progress"] else _quiet
    most = -(-len(found) // art.batch)
    with ray_runner(art, backend, ray, workers, device, threads, precision, most=most, log=log) as runner:
        return _run(runner, spec, found, out, batch=art.batch, **job)


class Engine:
    """An artifacts folder (made by ``dgn-engine export`` or ``dgn.export``) run in onnxruntime, on CUDA
    or CPU; no torch needed.

    Args:
        artifacts: the artifacts folder (or a loaded ``artifacts.Artifacts``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: CPU threads (default: all cores).
        backend: ``"step-graph"`` or ``"training-api"`` (default: the first the artifacts serve).
        precision: ``"float32"`` or ``"tf32"``.
        ray: run the batches on Ray workers, one per GPU (CPU workers where the cluster has none):
            True for a local Ray (or the one ``ray.init()`` started), ``"auto"`` or ``"ray://HOST:PORT"``
            to join a cluster. Needs the ray extra.
        workers: how many Ray workers.

    Example:
        >>> import dgn_engine as dgn
        >>> engine = dgn.Engine("art", device="cuda")
        >>> results = engine.run(dgn.all_classes(engine.num_classes), out="results", steps=300)
    """

    @checked
    def __init__(
        self,
        artifacts: ArtifactsFolder,
        device: Device = "auto",
        threads: Threads | None = None,
        backend: EngineBackend | None = None,
        precision: EnginePrecision = "float32",
        ray: Ray | None = None,
        workers: Workers | None = None,
    ):
        from .artifacts import Artifacts, load_artifacts

        _check_together("Engine", {"ray": ray, "workers": workers})

        self.artifacts = artifacts if isinstance(artifacts, Artifacts) else load_artifacts(os.fspath(artifacts))
        self.backend_name = backend or self.artifacts.backends[0]
        self.device, self.threads, self.precision = device, threads, precision
        self.ray, self.workers = ray, workers
        self._backend = None
        if ray is None:
            _ = self.backend  # a bad device or precision is reported now, not at run

    @property
    def backend(self):
        """The backend in this process (a Ray run needs none here)."""
        from .engine.backends import engine_backend

        if self._backend is None:
            self._backend = engine_backend(self.backend_name, self.artifacts, self.device, self.threads, self.precision)
        return self._backend

    @property
    def num_classes(self) -> int:
        return self.artifacts.manifest["num_classes"]

    @checked
    def run(
        self,
        targets: Targets,
        out: Path | None = None,
        *,
        labels: Labels | None = None,
        display: Display = "model",
        force: Flag = False,
        progress: Flag = True,
        **settings: Unpack[RunSettings],
    ) -> list[Result]:
        """Preferred inputs of `targets`, run on this engine's artifacts.

        Args:
            targets: one target or a list (text or ``Target`` objects); every layer they read must be
                tapped by the artifacts.
            out: a results folder to keep (resumable); None uses a temporary one.
            labels: class names for the results (default: the artifacts' own).
            display, force, progress: as for ``synthesize``.
            **settings: override the artifacts' numbers: steps, seed, lr, momentum, noise_sigma,
                reg_weight, lam, target_leak, snapshots, keep (the structure, such as the optimiser, is
                fixed by the export).

        Returns:
            One ``Result`` per target, in order.

        Example:
            >>> results = dgn.Engine("art").run(["class:3", "channel:features.28:17"], steps=200)
        """
        check_out("Engine.run", out)
        found = _targets(targets)
        spec = with_settings(self.artifacts.spec, [t.text for t in found], **settings)
        self.artifacts.check_spec(spec)
        for t in found:
            self.artifacts.require_taps(t)
        taps = self.artifacts.manifest["taps"]
        return _run_artifacts(
            self.artifacts,
            self.backend_name,
            spec,
            found,
            out,
            ray=self.ray,
            workers=self.workers,
            device=self.device,
            threads=self.threads,
            precision=self.precision,
            local=lambda: self.backend,
            labels=labels,
            display=display,
            force=force,
            progress=progress,
            layers=taps,
        )


def _classifier(call, model, weights, image_size, channels, mean, std, labels, seed, keep_softmax=False):
    """D from `model` in any of its forms, refused (naming `model`) where the search cannot run through it:
    tensors on the meta device, or an output with no gradient with respect to the image."""
    from .exporter.classifiers import classifier_from_module, gradient_problem, load_classifier, module_problem

    if isinstance(model, (str, os.PathLike)):
        clf = load_classifier(
            os.fspath(model),
            weights,
            image_size=image_size,
            channels=channels,
            mean=mean,
            std=std,
            seed=seed,
            keep_softmax=keep_softmax,
        )
        if labels is not None:
            clf.labels = list(labels)
    else:
        problem = module_problem(model)
        if problem:
            refuse(call, "model", model, problem)
        clf = classifier_from_module(
            model,
            image_size=image_size,
            channels=channels,
            mean=mean,
            std=std,
            labels=list(labels) if labels else None,
            keep_softmax=keep_softmax,
        )
    problem = gradient_problem(clf)
    if problem:
        refuse(call, "model", model, problem)
    return clf


def _check_together(call: str, given: dict) -> None:
    """Checks between arguments, before any work: what one argument makes of another."""
    mode, backend = given.get("mode"), given.get("backend")
    if given.get("weights") is not None and not isinstance(given.get("model"), (str, os.PathLike)):
        refuse(
            call,
            "weights",
            given["weights"],
            "weights are for a classifier given by name; load them into the module yourself",
        )
    if given.get("precision") == "float64" and backend not in (None, "torch"):
        refuse(
            call,
            "precision",
            "float64",
            f"float64 runs on backend='torch' only; backend={backend!r} runs 'float32' or 'tf32'",
        )
    if given.get("ray") is not None and backend == "torch":
        refuse(
            call,
            "ray",
            given["ray"],
            "Ray runs exported graphs on its workers; use backend='step-graph' (the default)",
        )
    if given.get("workers") is not None and given.get("ray") is None:
        refuse(call, "workers", given["workers"], "sets how many Ray workers run the batches; give ray= too")
    if given.get("decoder") is not None and mode != "pretrained":
        refuse(
            call, "decoder", given["decoder"], "the decoder is the pretrained G; use mode='pretrained' or leave it out"
        )
    if given.get("g_width") is not None and mode != "untrained":
        why = "the decoder fixes G's widths" if mode == "pretrained" else f"{mode} mode has no G"
        refuse(call, "g_width", given["g_width"], f"it scales the untrained G; {why}")
    if given.get("spectrum") is not None and mode != "maco":
        refuse(
            call,
            "spectrum",
            given["spectrum"],
            "the spectrum is maco mode's Fourier magnitude; use mode='maco' or leave it out",
        )
    mean, std, channels = given.get("mean"), given.get("std"), given.get("channels")
    if mean is not None and std is not None and len(mean) != len(std):
        refuse(call, "std", std, f"{len(std)} values where mean= has {len(mean)}; give one per channel")
    n = None if channels is None else (1 if channels == "L" else 3)
    for name in ("mean", "std"):
        values = given.get(name)
        if n is not None and values is not None and len(values) != n:
            refuse(call, name, values, f"{len(values)} values for channels={channels!r}; expected {n}")


def _check_cache(call: str) -> None:
    """The export cache is a folder (or can become one) where a file is not in the way: one line now,
    not a NotADirectoryError later. Whether it is writable is asked only when an export must be written
    (a read-only cache that holds the export serves it)."""
    from . import demo

    exports = os.path.join(demo.cache_dir(), "exports")
    problem = folder_problem(exports, writable=False)
    if problem:
        raise UsageError(f"{call}: the export cache {exports!r} {problem}; set DGN_ENGINE_CACHE to a writable folder")


@checked
def mode_spec(clf: ClassifierArg, mode: Mode):
    """A mode's defaults for this classifier: the paper's, or the embedded demo's own (as `run` has them)."""
    from . import demo

    return demo.spec(mode) if clf.name == demo.NAME else default_spec(mode, clf.preprocessing.image_size)


def _is_artifacts(model) -> bool:
    from .artifacts import MANIFEST

    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(model), MANIFEST))


@checked
def export_key(coupled: Any, spec: Spec, batch: Batch, backends: EngineBackends) -> str:
    """What a cached export depends on: what D computes (its traced graph), D's and G's tensors and every
    structural choice."""
    from ._version import __version__
    from .artifacts import FORMAT_VERSION
    from .digests import sha256_json
    from .engine.backends.torch_reference import made_of

    return sha256_json(
        {
            "made_of": made_of(coupled),
            "batch": batch,
            "backends": sorted(backends),
            "structure": spec.structure(),
            "format": FORMAT_VERSION,
            "dgn_engine": __version__,
        }
    )[:24]


def _cached_export(coupled, spec, sources, batch: int, backends, progress: bool):
    """The artifacts of this G + D, exported once into the cache and reused while they are whole."""
    from . import demo
    from .artifacts import load_artifacts
    from .exporter.manifest import export_artifacts

    folder = os.path.join(demo.cache_dir(), "exports", export_key(coupled, spec, batch, backends))
    if os.path.isdir(folder):
        try:
            art = load_artifacts(folder)
            art.check_files()
            return art
        except UsageError:
            pass  # damaged or half-written: made again
    problem = folder_problem(os.path.dirname(folder))
    if problem is None:
        try:
            os.makedirs(os.path.dirname(folder), exist_ok=True)
        except OSError as e:
            problem = f"cannot be created ({e.strerror or e})"
    if problem:
        raise UsageError(
            f"the export cache {os.path.dirname(folder)!r} {problem}; set DGN_ENGINE_CACHE to a writable folder"
        )
    if progress:  # tracing says nothing for its seconds: say what is happening and that it happens once
        print(f"exporting this classifier's {coupled.mode} mode to ONNX, once (the next calls reuse it): {folder}")
    return export_artifacts(
        coupled, spec, sources, batch, folder, force=True, log=print if progress else _quiet, backends=backends
    )


@checked
def synthesize(
    model: Model,
    targets: Targets,
    *,
    mode: Mode = "untrained",
    steps: Steps | None = None,
    image_size: ImageSize | None = None,
    channels: Channels | None = None,
    mean: Mean | None = None,
    std: Std | None = None,
    labels: Labels | None = None,
    weights: Weights | None = None,
    decoder: Path | None = None,
    g_width: GWidth | None = None,
    spectrum: Path | None = None,
    device: Device = "auto",
    backend: Backend = "step-graph",
    batch: Batch | None = None,
    seed: Seed = 0,
    out: Path | None = None,
    progress: Flag = True,
    display: Display | None = None,
    force: Flag = False,
    precision: Precision = "float32",
    ray: Ray | None = None,
    workers: Workers | None = None,
    keep_softmax: Flag = False,
    **settings: Unpack[MethodSettings],
) -> list[Result]:
    """Preferred inputs of `targets` for the classifier `model`: images that drive each target up.

    Args:
        model: D. An ``nn.Module`` (its input format from ``image_size``/``mean``/``std``, else its
            ``preprocessing`` attribute), a TorchScript (.pt) or ONNX (.onnx) file, ``"vgg16"`` (with
            ``weights=FILE`` or ``"random"``), ``"demo"``, ``"module:factory"``, or an artifacts folder
            (which then fixes D, G and the input format).
        targets: one target or a list: text (``"class:3"``, ``"0.5*class:9+class:339"``,
            ``"channel:layer3:17"``) or objects (``dgn.Class(3) + 0.5 * dgn.Channel("layer3", 17)``).
        mode: ``"untrained"`` (all of G optimised, no decoder needed), ``"pretrained"`` (only the
            features of a trained decoder, ``decoder=FILE`` made by ``dgn-engine train-decoder``),
            ``"pixel"`` (no G: the classic baseline, a Fourier-parameterised image) or ``"maco"`` (no G:
            only the phase of an image whose Fourier magnitude is fixed, that of the photos in
            ``spectrum=DIR``, else a 1/f power law).
        steps: optimisation steps per target (default: the mode's, see ``spec.default_spec``).
        image_size, channels, mean, std: D's input format where the model cannot tell: pixels
            ``image_size`` square, ``"RGB"``, ``"BGR"`` or ``"L"``, input = (pixel / 255 - mean) / std.
        labels: class names, one per class, for the results and the gallery.
        weights: D's weights file, for a classifier given by name.
        decoder, g_width, spectrum: G's decoder file (pretrained), width scale (untrained), photo
            folder (maco).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        backend: ``"step-graph"`` (the exported graph in onnxruntime, exported once per model into the
            cache), ``"training-api"`` or ``"torch"`` (the eager reference).
        batch: targets optimised together (default: up to 8, in equal batches).
        seed: seeds G's start and the noise: the same seed gives the same images.
        out: a results folder to keep (resumable: finished targets are not recomputed); None uses a
            temporary one.
        progress: progress bars and the summary line.
        display: ``"model"`` (the picture D saw), ``"contrast"`` (stretched to 0..255) or
            ``"original"``.
        force: recompute targets in ``out`` made with other settings.
        precision: ``"float32"``, ``"tf32"`` (CUDA tensor cores) or ``"float64"`` (``backend="torch"``).
        ray, workers: run the batches on Ray workers (see ``Engine``).
        keep_softmax: optimise D's output as it is. By default a final Softmax, LogSoftmax or Sigmoid on
            D's output (Keras-made ONNX files and many deployed models carry one) is taken off, so that
            the search drives the scores before it, as the paper does; the activation and top-5 are then
            scores, and ``Result.probability`` and ``Result.top5_probability`` are D's probabilities.
        **settings: lr, momentum, optimizer, noise_sigma, noise_schedule, regularizer, reg_weight, lam,
            target_leak, image_range, snapshots, keep, pick, transforms (``"none"``, ``"standard"``,
            ``"jitter=J,scale=S,rotate=DEG"``), paper=True (the paper's method to the letter).

    Returns:
        One ``Result`` per target, in order: the written PNG as a PIL image, D's activation and top-5 on
        that PNG, the loss curve and the record that says what made it.

    Raises:
        arguments.ArgumentError: a bad argument, before any work: one line naming it, its value and
            what is expected (numbers are not read from text). A module whose output has no gradient
            with respect to the image (a forward under ``torch.no_grad()``, integer outputs) or whose
            tensors are on the meta device is refused before anything is exported or written.

    A float16, bfloat16 or float64 module is run as a float32 copy, with a warning.

    Example:
        >>> import dgn_engine as dgn
        >>> results = dgn.synthesize("demo", ["class:1", "class:7"], mode="pixel", steps=64)
        >>> results[0].top5[0]          # D's top-1 on the written PNG: (class, name, score)
        >>> dgn.grid(results)           # a labelled contact sheet (Jupyter shows it)
    """
    given = dict(locals(), **settings)
    _check_together("synthesize", given)
    check_out("synthesize", out)
    found = _targets(targets)
    texts = [t.text for t in found]
    if _is_artifacts(model):
        if backend == "torch":
            raise ArgumentError(
                "synthesize(backend='torch'): an artifacts folder runs on its exported graphs; for the torch "
                "reference pass the classifier itself"
            )
        fixed = ("image_size", "channels", "mean", "std", "weights", "decoder", "g_width", "spectrum", "batch")
        for name in fixed:
            if given[name] is not None:
                refuse("synthesize", name, given[name], "the artifacts folder fixes it; leave it out (or export again)")
        if keep_softmax:
            refuse("synthesize", "keep_softmax", True, "the artifacts folder fixes D's output; export again with it")
        engine = Engine(
            model,
            device=device,
            backend=None if backend == "step-graph" else backend,
            precision=precision,
            ray=ray,
            workers=workers,
        )
        return engine.run(
            found,
            out,
            labels=labels,
            display=display or "model",
            force=force,
            progress=progress,
            steps=steps,
            seed=seed,
            **settings,
        )
    if backend != "torch":
        _check_cache("synthesize")
    from .exporter.coupled import couple

    clf = _classifier("synthesize", model, weights, image_size, channels, mean, std, labels, seed, keep_softmax)
    from . import demo

    display = display or (demo.DISPLAY if clf.name == demo.NAME else "model")
    spec = with_settings(mode_spec(clf, mode), texts, steps=steps, seed=seed, **settings)
    taps = sorted({layer for t in found for layer in t.layers})
    coupled = couple(clf, spec, taps, decoder, g_width, spectrum)
    layers = coupled.classifier.layer_names()
    for t in found:  # before any export
        check_target(t, coupled.layout, layers)
    if backend == "torch":
        from .engine.backends.torch_reference import TorchBackend

        engine_backend = TorchBackend(coupled, precision, device)
        k = batch or 1
    else:
        from .engine.backends import engine_backend as make_backend

        k = batch or -(-len(found) // -(-len(found) // 8))  # at most 8, in batches of equal size
        sources = _sources(model, clf, mode, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum)
        sources = replace(sources, keep_softmax=keep_softmax)
        art = _cached_export(coupled, spec, sources, k, [backend], progress)
        return _run_artifacts(
            art,
            backend,
            spec,
            found,
            out,
            ray=ray,
            workers=workers,
            device=device,
            threads=None,
            precision=precision,
            local=lambda: make_backend(backend, art, device, precision=precision),
            labels=labels,
            display=display,
            force=force,
            progress=progress,
            layers=taps,
        )
    return _run(
        engine_backend,
        spec,
        found,
        out,
        batch=k,
        labels=labels,
        display=display,
        force=force,
        progress=progress,
        layers=layers,
    )


@checked
def export(
    model: Model,
    out: Path,
    *,
    mode: Mode = "untrained",
    taps: Taps = (),
    batch: Batch = 1,
    backends: EngineBackends = ("step-graph",),
    weights: Weights | None = None,
    decoder: Path | None = None,
    image_size: ImageSize | None = None,
    channels: Channels | None = None,
    mean: Mean | None = None,
    std: Std | None = None,
    labels: Labels | None = None,
    g_width: GWidth | None = None,
    spectrum: Path | None = None,
    seed: Seed = 0,
    force: Flag = False,
    progress: Flag = True,
    keep_softmax: Flag = False,
    **settings: Unpack[ExportSettings],
):
    """Write the artifacts folder `out` for `model`: the ONNX graphs of one optimisation step, of G alone
    and of D alone, and the manifest that says what they are and what they were made from.

    Args:
        model: D, in any form ``synthesize`` takes (not an artifacts folder).
        out: the folder to write: new, empty, or one that holds artifacts (with ``force=True``).
        mode: as for ``synthesize``.
        taps: the layers of D that channel and neuron targets may read.
        batch: K, the targets each graph call optimises together.
        backends: ``("step-graph",)`` and/or ``"training-api"``.
        weights, decoder, image_size, channels, mean, std, labels, g_width, spectrum, seed: as for
            ``synthesize``.
        force: replace the artifacts in ``out``.
        progress: say what is being exported.
        keep_softmax: optimise D's output as it is, its final Softmax included (see ``synthesize``); the
            manifest's ``scores`` says which was done.
        **settings: the method's settings, as for ``synthesize``; the structural ones are fixed in the
            graphs, the numbers are defaults that ``Engine.run`` may override.

    Returns:
        The loaded ``artifacts.Artifacts``; ``Engine(out)`` runs them anywhere onnxruntime is installed.

    Raises:
        arguments.ArgumentError: a bad argument or module, as ``synthesize`` checks them, before
            anything is written.

    Example:
        >>> import dgn_engine as dgn
        >>> dgn.export(my_resnet, "art", taps=["layer3"], batch=8, image_size=224)
        >>> dgn.Engine("art").run("channel:layer3:17")
    """
    from .exporter.coupled import couple
    from .exporter.manifest import export_artifacts

    _check_together("export", dict(locals(), **settings))
    check_out("export", out)
    clf = _classifier("export", model, weights, image_size, channels, mean, std, labels, seed, keep_softmax)
    spec = with_settings(mode_spec(clf, mode), (), seed=seed, **settings)
    coupled = couple(clf, spec, list(taps), decoder, g_width, spectrum)
    sources = _sources(model, clf, mode, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum)
    sources = replace(sources, keep_softmax=keep_softmax)
    return export_artifacts(
        coupled,
        spec,
        sources,
        batch,
        os.fspath(out),
        force=force,
        log=print if progress else _quiet,
        backends=list(backends),
    )


def _sources(model, clf, mode, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum=None):
    """What the export records it was made from (absolute paths), for `model` in any of its forms."""
    from .exporter.coupled import Sources

    name = clf.name if not isinstance(model, (str, os.PathLike)) else os.fspath(model)
    return Sources(mode, name, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum).absolute()


@checked
def grid(results: Results, columns: Columns = 10, tile: Tile = 128):
    """A labelled contact sheet of results: each image with its name, its activation and whether it is
    D's top-1.

    Args:
        results: ``Result`` objects (from ``synthesize`` or ``Engine.run``).
        columns: images per row.
        tile: pixels per image (nearest-neighbour scaled).

    Returns:
        A PIL image (Jupyter shows it).

    Example:
        >>> dgn.grid(dgn.synthesize("demo", dgn.all_classes(10), mode="pixel", steps=64), columns=5)
    """
    from .engine.gallery import contact_sheet

    if not results:
        raise UsageError("grid() needs at least one result")
    captions = []
    for r in results:
        act = "diverged" if r.diverged else f"act {r.activation:.3g}"
        captions.append(f"{r.name}\n{act}" + (" (top-1)" if r.top1_is_target else ""))
    return contact_sheet([r.image for r in results], captions, columns, tile)
