"""The Python API, for notebooks and scripts: one call from a classifier to its preferred inputs.

    import dgn_engine as dgn
    results = dgn.synthesize(model, ["class:3", dgn.Class(9) + 0.5 * dgn.Channel("layer3", 17)])
    dgn.grid(results)

`synthesize` takes D as an in-memory torch module, a TorchScript or ONNX file, a name ("vgg16" with
weights=, "demo", "module:factory") or an artifacts folder. With the step-graph backend it exports G + D
once into a cache keyed by the digests of D's and G's tensors and the settings the graph fixes, so the
next call on the same model starts at once. `Engine` runs an artifacts folder and needs no torch.
The CLI builds on the same pieces (spec.with_settings, the job, the results folder).
"""

from __future__ import annotations

import os
import shutil
import tempfile

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
        run_job(
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
        return load_results(str(folder), targets, keep_paths=out is not None)
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


def run_job(
    runner,
    spec,
    targets: list[Target],
    out: str,
    *,
    batch: int,
    labels,
    display: str,
    force: bool,
    progress: bool,
    layers: list[str],
    log=None,
    shard: tuple[int, int] | None = None,
) -> None:
    """Check the targets and labels against D, then the resumable job writing `out`: what `dgn-engine run`
    and the functions above share once they hold a runner (engine.runners: here, or Ray) or a backend."""
    from .engine.jobs import Job, JobOptions
    from .engine.runners import LocalRunner

    if not hasattr(runner, "results"):
        runner = LocalRunner(runner)
    for t in targets:
        check_target(t, runner.layout, layers)
    if labels is not None and len(labels) != runner.layout[OUTPUT][0]:
        raise UsageError(f"{len(labels)} labels for a classifier of {runner.layout[OUTPUT][0]} classes")
    options = JobOptions(
        batch=batch,
        display=display,
        force=force,
        labels=list(labels) if labels else None,
        progress=progress,
        shard=shard,
    )
    Job(runner, spec, out, options).run(log=log or (print if progress else _quiet))


def ray_runner(art, backend: str, ray, workers=None, device="auto", threads=None, precision="float32", **kw):
    """A RayRunner (imports Ray). ray: True or "local" (a local Ray, or the one ray.init() started),
    "auto", "ray://HOST:PORT" or "HOST:PORT" (a cluster)."""
    from .engine.ray_runner import RayRunner

    if ray is not True and not isinstance(ray, str):
        raise UsageError(f"ray= takes True, 'local', 'auto', 'ray://HOST:PORT' or 'HOST:PORT', not {ray!r}")
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
    """An artifacts folder (made by `dgn-engine export` or `dgn.export`) run in onnxruntime, on CUDA
    or CPU; no torch needed.

        engine = dgn.Engine("art", device="cuda")
        results = engine.run(dgn.all_classes(1000), out="results", steps=300)

    ray: run the batches on Ray workers, one per GPU (CPU workers where the cluster has none; `workers`
    sets how many): True for a local Ray (or the one ray.init() started), "auto" or "ray://HOST:PORT" to
    join a cluster. Needs the ray extra.
    """

    def __init__(
        self,
        artifacts,
        device: str = "auto",
        threads: int | None = None,
        backend: str | None = None,
        precision: str = "float32",
        ray=None,
        workers: int | None = None,
    ):
        from .artifacts import Artifacts, load_artifacts

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

    def run(
        self,
        targets,
        out=None,
        *,
        labels=None,
        display: str = "model",
        force: bool = False,
        progress: bool = True,
        **settings,
    ) -> list[Result]:
        """Results for `targets` (text, Target objects, or a list of them). Settings override the
        artifacts' own: steps, seed, lr, momentum, noise_sigma, reg_weight, lam, target_leak, snapshots,
        keep (the structure, e.g. the optimiser, is fixed by the export). `out` keeps the results
        folder (resumable: finished targets are not recomputed); None uses a temporary one."""
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


def _classifier(model, weights, image_size, channels, mean, std, labels, seed):
    from .export.classifiers import classifier_from_module, load_classifier

    if isinstance(model, (str, os.PathLike)):
        clf = load_classifier(
            os.fspath(model), weights, image_size=image_size, channels=channels, mean=mean, std=std, seed=seed
        )
        if labels is not None:
            clf.labels = list(labels)
        return clf
    if weights is not None:
        raise UsageError("weights= is for a classifier given by name; load them into the module yourself")
    return classifier_from_module(
        model, image_size=image_size, channels=channels, mean=mean, std=std, labels=list(labels) if labels else None
    )


def mode_spec(clf, mode: str):
    """A mode's defaults for this classifier: the paper's, or the embedded demo's own (as `run` has them)."""
    from . import demo

    return demo.spec(mode) if clf.name == demo.NAME else default_spec(mode, clf.preprocessing.image_size)


def _is_artifacts(model) -> bool:
    from .artifacts import MANIFEST

    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(model), MANIFEST))


def export_key(coupled, spec, batch: int, backends) -> str:
    """What a cached export depends on: D's and G's tensors and every structural choice."""
    from . import __version__
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
    from .export.manifest import export_artifacts

    folder = os.path.join(demo.cache_dir(), "exports", export_key(coupled, spec, batch, backends))
    if os.path.isdir(folder):
        try:
            art = load_artifacts(folder)
            art.check_files()
            return art
        except UsageError:
            pass  # damaged or half-written: made again
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    return export_artifacts(
        coupled, spec, sources, batch, folder, force=True, log=print if progress else _quiet, backends=backends
    )


def synthesize(
    model,
    targets,
    *,
    mode: str = "untrained",
    steps: int | None = None,
    image_size: int | None = None,
    channels: str | None = None,
    mean=None,
    std=None,
    labels=None,
    weights: str | None = None,
    decoder: str | None = None,
    g_width: float | None = None,
    spectrum: str | None = None,
    device: str = "auto",
    backend: str = "step-graph",
    batch: int | None = None,
    seed: int = 0,
    out=None,
    progress: bool = True,
    display: str | None = None,
    force: bool = False,
    precision: str = "float32",
    ray=None,
    workers: int | None = None,
    **settings,
) -> list[Result]:
    """Preferred inputs of `targets` for the classifier `model`; one Result per target, in order.

        results = dgn.synthesize(resnet, ["class:1", dgn.Channel("layer3", 17)], steps=300)
        results[0]            # shows the image in Jupyter
        results[0].top5       # D's top-5 on the written PNG

    model: an nn.Module (its input format from image_size/mean/std, else its `preprocessing`
    attribute), a TorchScript or ONNX file, "vgg16" (weights=FILE or "random"), "demo",
    "module:factory", or an artifacts folder. mode: "untrained" (all of G optimised, no decoder needed)
    or "pretrained" (decoder=FILE, made by `dgn-engine train-decoder`), or "pixel" (no G: the classic
    baseline, a Fourier-parameterised image), or "maco" (no G: only the phase of an image whose Fourier
    magnitude is fixed, that of the photos in the folder spectrum=DIR, else a 1/f power law). backend: "step-graph" (the
    exported graph in onnxruntime, exported once per model into the cache), "training-api", or
    "torch" (the eager reference). precision: "float32", "tf32" (CUDA tensor cores, faster, ~1e-3
    relative error per product) or "float64" (torch only). Other settings: lr, momentum, optimizer,
    noise_sigma, regularizer,
    reg_weight, lam, target_leak, image_range, snapshots, keep, transforms ("none", "standard",
    "jitter=J,scale=S,rotate=DEG"), paper=True (the paper's method to the letter) (defaults: the paper's
    for the mode, see spec.default_spec). ray: the batches on Ray workers (see Engine), `workers` of them.
    """
    found = _targets(targets)
    texts = [t.text for t in found]
    if _is_artifacts(model):
        if backend == "torch":
            raise UsageError(
                "an artifacts folder runs on its exported graphs; for the torch reference pass the classifier itself"
            )
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
    if backend not in ("step-graph", "training-api", "torch"):
        raise UsageError(f"backend must be step-graph, training-api or torch, got {backend!r}")
    if ray is not None and backend == "torch":
        raise UsageError("ray= runs exported graphs on its workers; use backend='step-graph' (the default)")
    from .export.coupled import couple

    clf = _classifier(model, weights, image_size, channels, mean, std, labels, seed)
    from . import demo

    display = display or (demo.DISPLAY if clf.name == demo.NAME else "model")
    spec = with_settings(mode_spec(clf, mode), texts, steps=steps, seed=seed, **settings)
    taps = sorted({layer for t in found for layer in t.layers})
    if decoder is not None and mode != "pretrained":
        raise UsageError("decoder= is the pretrained G; use mode='pretrained' or leave it out")
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


def export(
    model,
    out,
    *,
    mode: str = "untrained",
    taps=(),
    batch: int = 1,
    backends=("step-graph",),
    weights: str | None = None,
    decoder: str | None = None,
    image_size: int | None = None,
    channels: str | None = None,
    mean=None,
    std=None,
    labels=None,
    g_width: float | None = None,
    spectrum: str | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    **settings,
):
    """Write the artifacts folder `out` for `model` (the forms `synthesize` takes) and return it;
    `Engine(out)` runs it anywhere onnxruntime is installed."""
    from .export.coupled import couple
    from .export.manifest import export_artifacts

    clf = _classifier(model, weights, image_size, channels, mean, std, labels, seed)
    spec = with_settings(mode_spec(clf, mode), (), seed=seed, **settings)
    coupled = couple(clf, spec, list(taps), decoder, g_width, spectrum)
    sources = _sources(model, clf, mode, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum)
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
    from .export.coupled import Sources

    name = clf.name if not isinstance(model, (str, os.PathLike)) else os.fspath(model)
    return Sources(mode, name, weights, image_size, channels, mean, std, decoder, g_width, seed, spectrum).absolute()


def grid(results: list[Result], columns: int = 10, tile: int = 128):
    """A labelled contact sheet of results (a PIL image; Jupyter shows it): each image with its name,
    its activation and whether it is D's top-1."""
    from .engine.gallery import contact_sheet

    if not results:
        raise UsageError("grid() needs at least one result")
    captions = []
    for r in results:
        act = "diverged" if r.diverged else f"act {r.activation:.3g}"
        captions.append(f"{r.name}\n{act}" + (" (top-1)" if r.top1_is_target else ""))
    return contact_sheet([r.image for r in results], captions, columns, tile)
