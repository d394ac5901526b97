"""An artifacts folder written: the traced graphs with their large constants shared in one weights.bin,
the manifest recording what they are and what they came from, all moved in at once (manifest last)."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
import tempfile
import time

import onnx
import torch

from .. import demo
from .._version import __version__
from ..artifacts import BACKEND_FILES, FORMAT_VERSION, LOCK, MANIFEST, folder_lock, load_artifacts
from ..digests import sha256_file
from ..errors import UsageError, setting
from ..files import write_json
from ..spec import HYPER, RunSpec
from ..state import state_shapes, trainable_shapes
from ..targets import OUTPUT
from .coupled import CoupledStep, Sources, build_coupled
from .step_graph import trace_graphs
from .tracing import OPSET

BACKENDS = tuple(BACKEND_FILES)
WEIGHTS_FILE = "weights.bin"
EXTERNAL_MIN_BYTES = 1024  # smaller constants stay inside the graph files
ALIGN = 4096
TMP_PREFIX = ".export-"


def save_with_shared_weights(models: dict[str, onnx.ModelProto], folder: str) -> None:
    """Write every large constant once into weights.bin (aligned) and point each graph at it."""
    placed: dict[tuple, tuple[int, int]] = {}
    with open(os.path.join(folder, WEIGHTS_FILE), "wb") as blob:
        for name in sorted(models):
            for init in models[name].graph.initializer:
                data = onnx.numpy_helper.to_array(init).tobytes()
                if len(data) < EXTERNAL_MIN_BYTES:
                    continue
                key = (init.data_type, hashlib.sha256(data).digest())
                if key not in placed:
                    offset = -blob.tell() % ALIGN + blob.tell()
                    blob.seek(offset)
                    blob.write(data)
                    placed[key] = (offset, len(data))
                offset, length = placed[key]
                init.ClearField("raw_data")
                for field in ("float_data", "int64_data", "int32_data", "double_data"):
                    init.ClearField(field)
                init.data_location = onnx.TensorProto.EXTERNAL
                del init.external_data[:]
                for k, v in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                    entry = init.external_data.add()
                    entry.key, entry.value = k, v
            onnx.save(models[name], os.path.join(folder, f"{name}.onnx"))


def _versions() -> dict:
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"dgn_engine": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort}


# every name an export writes into its folder (its lock and its temporary folders included)
OWN_FILES = {MANIFEST, WEIGHTS_FILE, LOCK, "step.onnx", "training.onnx", "checkpoint", "render.onnx", "classifier.onnx"}


def _own(name: str) -> bool:
    return name in OWN_FILES or name.startswith(TMP_PREFIX)


def prepare_out(out: str, force: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{setting('out')} {out!r} is a file; give a folder")
    names = os.listdir(out) if os.path.isdir(out) else []
    foreign = sorted(n for n in names if not _own(n))
    if foreign:  # never anyone else's files, --force or not
        raise UsageError(
            f"{setting('out')} {out!r} holds {foreign[0]!r}, which an export did not write; choose an empty or "
            f"new folder"
        )
    if MANIFEST in names and not force:
        raise UsageError(
            f"{setting('out')} {out!r} already holds artifacts; use {setting('force', True)} to replace them"
        )


def _clean_interrupted(out: str) -> None:
    """The temporary folders of exports into `out` that were killed (an export holds the folder's lock
    alone, so none of them is in use); only real folders of that name, never through a link."""
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name.startswith(TMP_PREFIX) and stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)


def export_artifacts(
    coupled: CoupledStep,
    spec: RunSpec,
    sources: Sources,
    k: int,
    out: str,
    force: bool = False,
    log=print,
    backends=("step-graph",),
):
    """Trace, write into a temporary folder beside `out`, then move in (manifest last)."""
    if k < 1:
        raise UsageError(f"{setting('batch')} must be at least 1, got {k}")
    prepare_out(out, force)
    started = time.perf_counter()
    backends = [b for b in BACKENDS if b in backends]
    models, io, files = trace_graphs(coupled, spec, k, backends)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {setting('out')} {out!r}: {e.strerror}") from None
    with folder_lock(out, exclusive=True):  # runs loading these graphs finish first; new ones wait
        _clean_interrupted(out)
        _write(coupled, spec, sources, k, out, backends, models, io, files, started)
    art = load_artifacts(out)
    size = sum(e["size"] for e in art.manifest["files"].values())
    final = coupled.classifier.final
    if final is not None:
        log(
            f"D's output is optimised as it is, its final {final.op} ({final.node}) included"
            if coupled.classifier.keep_softmax
            else f"scores taken before {final.describe()}"
        )
    log(
        f"exported {coupled.mode} mode for {' and '.join(backends)}, batch {k}, to {out!r} in "
        f"{time.perf_counter() - started:.1f} s ({size / 2**20:.1f} MiB)"
    )
    return art


def _write(coupled, spec, sources, k, out, backends, models, io, files, started) -> None:
    """The files written into a temporary folder inside `out`, then moved in (manifest last)."""
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out)
    try:
        save_with_shared_weights(models, tmp)
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        layout = coupled.layout
        clf = coupled.classifier
        written = {
            f: {"size": os.path.getsize(os.path.join(tmp, f)), "sha256": sha256_file(os.path.join(tmp, f))}
            for f in sorted(os.listdir(tmp))
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "backends": backends,
            "mode": coupled.mode,
            "batch": k,
            "spec": {**spec.to_json(), "targets": []},
            "hyper": list(HYPER),
            "plan": coupled.plan.to_json(),
            "preprocessing": clf.preprocessing.to_json(),
            "num_classes": layout[OUTPUT][0],
            "labels": clf.labels,
            **({"scores": scores} if (scores := clf.scores_record()) else {}),
            "taps": coupled.taps,
            "layout": {n: list(s) for n, s in layout.items()},
            "trainable_per_target": sum(math.prod(s) for s in trainable_shapes(coupled.mode, coupled.plan).values()),
            "state": [
                {"name": n, "shape": list(s)}
                for n, s in state_shapes(coupled.mode, coupled.plan, coupled.optimizer).items()
            ],
            "step_flops": io.pop("step_flops"),
            "graphs": io,
            "sources": sources.absolute().to_json(),
            "sha256": clf.sources,
            "files": written,
            "versions": _versions(),
            "opset": OPSET,
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        write_json(os.path.join(tmp, MANIFEST + ".part"), manifest)
        if os.path.exists(os.path.join(out, MANIFEST)):
            os.unlink(os.path.join(out, MANIFEST))
        for f in sorted(os.listdir(tmp)):
            if not f.endswith(".part"):
                os.replace(os.path.join(tmp, f), os.path.join(out, f))
        os.replace(os.path.join(tmp, MANIFEST + ".part"), os.path.join(out, MANIFEST))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_demo(mode: str, out: str, log=print, backends=("step-graph",), spec=None):
    """The embedded demo's artifacts: what the package ships and what `run` caches (`spec`: the demo's
    settings, or those with other structural choices)."""
    spec, sources = spec or demo.spec(mode), Sources(mode, demo.NAME)
    coupled = build_coupled(sources, spec, list(demo.TAPS))
    return export_artifacts(coupled, spec, sources, demo.BATCH, out, force=True, log=log, backends=backends)
