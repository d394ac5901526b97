"""The Python API, for notebooks and scripts: one call from a classifier to its preferred inputs.

    import dgn_engine as dgn
    results = dgn.synthesize(model, ["class:3", dgn.Class(9) + 0.5 * dgn.Channel("layer3", 17)])
    dgn.grid(results)

`synthesize` takes D as an in-memory torch module, a TorchScript or ONNX file, a name ("vgg16" with
weights=, "demo", "module:factory") or an artifacts folder. With the step-graph backend it exports G + D
once into a cache keyed by the digests of D's and G's tensors and the settings the graph fixes, so the
next call on the same model starts at once. `Engine` runs an artifacts folder and needs no torch.
Every call here, and every `dgn-engine run` and `export`, is a session.Request on one road (session.py).

Every public function here checks its arguments before any work (arguments.checked: pydantic's
validate_call over the types of arguments.py): a bad one raises arguments.ArgumentError, a UsageError
naming the call, the argument, its value and what is expected, e.g.
`synthesize(image_size=32.5): expected an integer from 8 to 2,048`.
"""

from __future__ import annotations

import os
from typing import Any

from typing_extensions import Unpack

from . import demo, export_cache, session
from .arguments import (
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
    Spec,
    Std,
    Steps,
    Taps,
    Targets,
    Threads,
    Tile,
    Weights,
    Workers,
    checked,
)
from .errors import UsageError
from .results import Result
from .session import ClassifierChoice, Execution, GeneratorChoice, Request, check_together
from .spec import default_spec
from .targets import Target, as_target


def _targets(targets) -> tuple[Target, ...]:
    if isinstance(targets, (str, Target)):
        targets = [targets]
    return tuple(dict.fromkeys(as_target(t) for t in targets))


def _given(settings: dict, **more) -> dict:
    """The settings given (None: the default)."""
    return {k: v for k, v in {**settings, **more}.items() if v is not None}


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

        check_together(Request(execution=Execution(ray=ray, workers=workers), caller="Engine"))

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
        ex = Execution(
            backend=self.backend_name,
            device=self.device,
            precision=self.precision,
            threads=self.threads,
            ray=self.ray,
            workers=self.workers,
            out=_path(out),
            force=force,
            display=display,
            progress=progress,
        )
        d = ClassifierChoice(self.artifacts, labels=tuple(labels) if labels is not None else None)
        request = Request(d, method=_given(settings), execution=ex, targets=_targets(targets), caller="Engine.run")
        return session.results(request, started=None if self.ray is not None else self.backend)


@checked
def mode_spec(clf: ClassifierArg, mode: Mode):
    """A mode's defaults for this classifier: the paper's, or the embedded demo's own (as `run` has them)."""

    return demo.spec(mode) if clf.name == demo.NAME else default_spec(mode, clf.preprocessing.image_size)


@checked
def export_key(coupled: Any, spec: Spec, batch: Batch, backends: EngineBackends) -> str:
    """What a cached export depends on: what D computes (its traced graph), D's and G's tensors and every
    structural choice."""
    return export_cache.export_key(coupled, spec, batch, backends)


@checked
def synthesize(
    model: Model,
    targets: Targets,
    *,
    mode: Mode | None = None,
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
    backend: Backend | None = None,
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
        mode: (default: the artifacts' mode; ``"pretrained"`` for the demo, which ships its decoder;
            else ``"untrained"``) ``"untrained"`` (all of G optimised, no decoder needed), ``"pretrained"`` (only the
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
        backend: ``"step-graph"`` (the default: the exported graph in onnxruntime, exported once per model
            into the cache; an artifacts folder's first backend), ``"training-api"`` or ``"torch"`` (the eager
            reference; for an artifacts folder, of the files its manifest names).
        batch: targets optimised together (default: up to 8, in equal batches, or up to 4 on a CPU for
            inputs of 128 px and more; the demo's 5; an artifacts folder's own; 1 on ``backend="torch"``).
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
    request = Request(
        ClassifierChoice(model, weights, image_size, channels, mean, std, _labels(labels), keep_softmax),
        GeneratorChoice(mode, decoder, g_width, spectrum),
        _given(settings, steps=steps, seed=seed),
        Execution(
            backend=backend,
            device=device,
            batch=batch,
            precision=precision,
            ray=ray,
            workers=workers,
            out=_path(out),
            force=force,
            display=display,
            progress=progress,
        ),
        _targets(targets),
        caller="synthesize",
    )
    return session.results(request)


@checked
def export(
    model: Model,
    out: Path,
    *,
    mode: Mode | None = None,
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
    request = Request(
        ClassifierChoice(model, weights, image_size, channels, mean, std, _labels(labels), keep_softmax),
        GeneratorChoice(mode, decoder, g_width, spectrum),
        _given(settings, seed=seed),
        Execution(backends=tuple(backends), batch=batch, out=os.fspath(out), force=force, progress=progress),
        targets=(),
        taps=tuple(taps),
        caller="export",
    )
    return session.export(request)


def _labels(labels) -> tuple[str, ...] | None:
    return tuple(labels) if labels is not None else None


def _path(out) -> str | None:
    return os.fspath(out) if out is not None else None


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
