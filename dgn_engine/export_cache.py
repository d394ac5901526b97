"""The export cache: G + D exported once per model into DGN_ENGINE_CACHE/exports (default
~/.cache/dgn-engine), keyed by what the graphs compute, and the demo's shipped artifacts wherever they
are that very export and none can be made (no torch, or a cache that cannot be written)."""

from __future__ import annotations

import os
from typing import Callable

from . import demo
from .arguments import folder_problem
from .errors import UsageError
from .spec import RunSpec, with_settings


def exports_folder() -> str:
    return os.path.join(demo.cache_dir(), "exports")


def check_cache() -> None:
    """The cache is a folder (or can become one) where a file is not in the way: one line now, not a
    NotADirectoryError later. Whether it is writable is asked only when an export must be written."""
    problem = folder_problem(exports_folder(), writable=False)
    if problem:
        raise UsageError(f"the export cache {exports_folder()!r} {problem}; set DGN_ENGINE_CACHE to a writable folder")


def export_spec(base: RunSpec, spec: RunSpec) -> RunSpec:
    """What a cached export records: the run's structure over `base` (its mode's defaults), so that what
    it holds never depends on the numbers of the call that first made it."""
    on = spec.transforms.enabled
    return with_settings(
        base,
        (),
        optimizer=spec.optimizer.name,
        regularizer=spec.regularizer.kind,
        image_range=spec.image_range,
        transforms=None if on == base.transforms.enabled else ("standard" if on else "none"),
    )


def export_key(coupled, spec: RunSpec, batch: int, backends) -> str:
    """What a cached export depends on: what D computes (its traced graph), D's and G's tensors and every
    structural choice."""
    from ._version import GRAPHS_REVISION, __version__
    from .artifacts import FORMAT_VERSION
    from .digests import sha256_json
    from .exporter.fingerprint import made_of

    return sha256_json(
        {
            "made_of": made_of(coupled),
            "batch": batch,
            "backends": sorted(backends),
            "structure": spec.structure(),
            "recorded": "the structure over the mode's defaults",  # what export_spec writes (older caches differ)
            "format": FORMAT_VERSION,
            "dgn_engine": __version__,
            "graphs": GRAPHS_REVISION,
        }
    )[:24]


def shipped_demo(mode: str, backend: str, spec: RunSpec, batch: int, layers: set[str]):
    """The demo's shipped artifacts where they are the export this run would make (the step-graph
    backend, the demo's structure, batch and taps: tests/test_demo.py keeps them equal to a fresh
    export); else None."""
    from .artifacts import load_artifacts

    own = spec.structure() == demo.spec(mode).structure() and layers <= set(demo.TAPS)
    if backend != "step-graph" or not own or batch != demo.BATCH:
        return None
    return load_artifacts(demo.shipped_artifacts(mode))


def cached_export(coupled, base: RunSpec, spec: RunSpec, batch: int, backend: str, sources, log: Callable):
    """The artifacts of this G + D for `spec` (over the mode's defaults `base`), exported once into the
    cache and reused while they are whole (`sources`: what the export records it was made from)."""
    from .artifacts import load_artifacts
    from .exporter.manifest import export_artifacts

    is_demo = coupled.classifier.name == demo.NAME
    folder = os.path.join(exports_folder(), export_key(coupled, spec, batch, [backend]))
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
        layers = set(coupled.taps)
        shipped = shipped_demo(coupled.mode, backend, spec, batch, layers) if is_demo else None
        if shipped is not None:
            return shipped
        raise UsageError(
            f"the export cache {os.path.dirname(folder)!r} {problem}; set DGN_ENGINE_CACHE to a writable folder"
        )
    what = "the embedded demo" if is_demo else "this classifier"
    log(f"exporting {what}'s {coupled.mode} mode to ONNX, once (the next calls reuse it): {folder}")
    return export_artifacts(
        coupled, export_spec(base, spec), sources, batch, folder, force=True, log=log, backends=[backend]
    )
