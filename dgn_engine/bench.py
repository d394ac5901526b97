"""Benchmarks: time per step of each backend on the same work, measured in one run.

Each row runs in its own process so that its peak memory is its own. Rows: for each size x mode
x batch K, the step graph in onnxruntime and torch eager (the reference), and torch.compile where
it runs; ratios are against torch eager at the same size, mode and K in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

BACKENDS = ("step-graph", "training-api", "torch", "torch-compile")
ENGINE_BACKENDS = ("step-graph", "training-api")


def _targets(k: int, n_classes: int):
    from .targets import Target, Term

    return [Target((Term("class", i % n_classes),)) for i in range(k)]


def time_backend(backend, spec, k: int, steps: int, warmup: int) -> dict:
    """Median seconds per step of `backend` over `steps` steps after `warmup` (loss read each step)."""
    from .engine.loop import transform_streams

    rng = np.random.default_rng(0)
    targets = _targets(k, backend.layout["output"][0])
    backend.start(targets, spec)
    transforms = transform_streams(backend, spec, targets)
    times = []
    for i in range(warmup + steps):
        noise = rng.standard_normal((k, backend.features))
        transform = transforms.next() if transforms else None
        t0 = time.perf_counter()
        out = backend.step(noise, read=True, image=False, transform=transform)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if not np.all(np.isfinite(out.loss)):
        raise RuntimeError("the benchmark's loss is not finite")
    return {
        "seconds_per_step": float(np.median(times)),
        "min_seconds_per_step": float(np.min(times)),
        "steps_timed": len(times),
    }


def _kernel_times(trace_file: str):
    """(node name, op type, microseconds) of each node run in an onnxruntime profile."""
    with open(trace_file) as f:
        events = json.load(f)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            yield e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), e.get("dur", 0)


def _shares(times: dict[str, float], most: int) -> list[list]:
    total = sum(times.values()) or 1.0
    return [[key, round(t / total, 4)] for key, t in sorted(times.items(), key=lambda kv: -kv[1])[:most]]


def op_shares(trace_file: str, most: int = 8) -> list[list]:
    """[op type, share of the step's node time] from an onnxruntime profile, largest first."""
    per_op: dict[str, float] = {}
    for _, op, t in _kernel_times(trace_file):
        per_op[op] = per_op.get(op, 0.0) + t
    return _shares(per_op, most)


LAYOUT = "layout"  # nodes onnxruntime adds itself: reorders between its blocked (NCHWc) and plain layouts


def _role_of(name: str, node_roles: dict[str, str]) -> str:
    """A profiled node's role in the exported graph. onnxruntime renames what it rewrites: a fusion
    appends '/<Fusion>/' (a Gemm's with its activation prefixes 'fused '), its NCHWc layout names a node
    after its output and appends '_nchwc' (so `node_roles` holds output names too)."""
    base = name.split("/")[0].removeprefix("fused ")
    base = base.removesuffix("_nchwc")
    for candidate in (base, "node_" + base):
        if candidate in node_roles:
            return node_roles[candidate]
    return LAYOUT


def role_shares(trace_file: str, node_roles: dict[str, str]) -> list[list]:
    """[role, share of the step's node time] (the roles of `bench --cost`), largest first."""
    per_role: dict[str, float] = {}
    for name, _, t in _kernel_times(trace_file):
        role = _role_of(name, node_roles)
        per_role[role] = per_role.get(role, 0.0) + t
    return _shares(per_role, len(per_role))


def peak_rss_mib() -> float:
    """This process's peak resident memory since its exec (ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_memory_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def artifacts_for(size: str, mode: str, k: int, cache: str, backends=("step-graph",)):
    """Export (once, into `cache`) the artifacts of a size, mode and batch for the engine backends."""
    from ._version import GRAPHS_REVISION
    from .artifacts import MANIFEST, load_artifacts

    backends = [b for b in ENGINE_BACKENDS if b in backends] or ["step-graph"]  # torch rows read the sources
    # the graphs' revision in the name: a cache kept across an upgrade is exported again, not timed as it was
    out = os.path.join(cache, f"{_file_safe(size)}-{mode}-k{k}-{'+'.join(backends)}-r{GRAPHS_REVISION}")
    if os.path.isfile(os.path.join(out, MANIFEST)):
        return load_artifacts(out)
    from .exporter.coupled import build_coupled
    from .exporter.manifest import export_artifacts

    sources, spec = bench_sources(size, mode, cache), bench_spec(size, mode)
    return export_artifacts(
        build_coupled(sources, spec, []), spec, sources, k, out, force=True, log=lambda *_: None, backends=backends
    )


def bench_spec(size: str, mode: str):
    """full: the paper's G at Table 1's settings; otherwise what `run` takes for D's input size by default
    (the demo's own settings are those of any 32 px D)."""
    from .exporter.classifiers import resolve_preprocessing
    from .spec import default_spec

    return default_spec(mode) if size == "full" else default_spec(mode, resolve_preprocessing(size).image_size)


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def bench_sources(size: str, mode: str, cache: str):
    """demo, full (VGG-16 with random weights) or any classifier name (its own weights), with a
    random decoder of the classifier's size in pretrained mode: timing does not depend on the values."""
    from .exporter.coupled import Sources

    if size == "demo":
        return Sources(mode, "demo")
    classifier, weights = ("vgg16", "random") if size == "full" else (size, None)
    decoder = None
    if mode == "pretrained":
        from .exporter.classifiers import resolve_preprocessing

        pp = resolve_preprocessing(classifier, weights)
        decoder = os.path.join(cache, f"decoder-random-{pp.image_size}-{pp.order}.pt")
        if not os.path.isfile(decoder):
            import torch

            from .exporter.autoencoder import save_decoder
            from .exporter.generator import Decoder
            from .plan import generator_plan

            torch.manual_seed(0)
            plan = generator_plan("decoder", pp.image_size, pp.channels)
            save_decoder(decoder, Decoder(plan).eval(), pp, {"note": "random, for timing"})
    return Sources(mode, classifier, weights, decoder=decoder)


def step_flops(art) -> float:
    return float(art.manifest.get("step_flops") or 0.0)


def run_row(row: dict) -> dict:
    """One benchmark row, in this process: {size, mode, k, backend, device, steps, warmup, cache}."""
    from .artifacts import load_artifacts

    art = load_artifacts(row["artifacts"])
    spec = art.spec
    if row["backend"] in ENGINE_BACKENDS:
        from .engine.backends import engine_backend

        backend = engine_backend(row["backend"], art, row["device"], row.get("threads"), row["precision"])
        if row.get("profile_ops") and row["backend"] == "step-graph":
            from .engine.backends.onnx_session import session

            prefix = os.path.join(tempfile.mkdtemp(prefix="dgn-profile-"), "step")
            backend.session = session(
                art.graph("step"), backend.providers, row.get("threads"), prefix, art.weights_bytes
            )
    else:
        import torch

        from .engine.backends.torch_reference import TorchBackend
        from .exporter.coupled import Sources, build_coupled

        if row.get("threads"):
            torch.set_num_threads(row["threads"])
        backend = TorchBackend(
            build_coupled(Sources.from_json(art.manifest["sources"]), spec, []), row["precision"], row["device"]
        )
        if row["backend"] == "torch-compile":
            backend.coupled.step = torch.compile(backend.coupled.step)
    result = time_backend(backend, spec, art.batch, row["steps"], row["warmup"])
    if row.get("profile_ops") and row["backend"] == "step-graph":
        trace = backend.session.end_profiling()
        result["profile"] = op_shares(trace)
        if (roles := _node_roles(art)) is not None:
            result["profile_roles"] = role_shares(trace, roles)
        shutil.rmtree(os.path.dirname(trace), ignore_errors=True)
    result["peak_rss_mib"] = peak_rss_mib()
    if backend.describe()["device"].startswith("cuda"):
        result["gpu_memory_mib"] = gpu_memory_mib()
    return result


def _node_roles(art) -> dict[str, str] | None:
    """Each step-graph node's role, or None where the onnx package (which reads the graph) is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    from .cost import assign_roles, load_step_graph

    graph = load_step_graph(art).graph
    roles = {}
    for node, role in zip(graph.node, assign_roles(graph)):
        roles[node.name] = role
        roles.update((out, role) for out in node.output if out not in roles)
    return roles


def _row_in_subprocess(row: dict) -> dict:
    code = (
        "import json, sys; from dgn_engine.bench import run_row; "
        "print('ROW', json.dumps(run_row(json.loads(sys.argv[1]))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(row)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": err[:300]}


@dataclass(frozen=True)
class Timing:
    """How every row of one bench run is timed."""

    device: str = "cpu"
    steps: int = 10
    warmup: int = 2
    threads: int | None = None
    precisions: tuple[str, ...] = ("float32",)
    profile: bool = False  # onnxruntime's per-op and per-role shares of step-graph rows (its overhead in their times)


def bench_group(art, size: str, backends, timing: Timing, log) -> list[dict]:
    """The rows of one artifacts folder (one size, mode and K), per precision torch eager first as the base."""
    rows = []
    for precision in timing.precisions:
        base = None
        for backend in sorted(backends, key=lambda b: b != "torch"):
            row, base = _timed_row(art, size, backend, precision, timing, base)
            rows.append(row)
            log(format_row(row))
            for key in ("profile", "profile_roles"):
                if row.get(key):
                    log("    " + ", ".join(f"{name} {share * 100:.1f} %" for name, share in row[key]))
    return rows


def _timed_row(art, size, backend, precision, timing: Timing, base):
    k, flops = art.batch, step_flops(art)
    row = {
        "size": size,
        "mode": art.mode,
        "k": k,
        "backend": backend,
        "precision": precision,
        "device": timing.device,
        "steps": timing.steps,
        "warmup": timing.warmup,
        "artifacts": art.path,
        "threads": timing.threads,
        "profile_ops": timing.profile,
    }
    row.update(_row_in_subprocess(row))
    if "seconds_per_step" in row:
        s = row["seconds_per_step"]
        row["targets_per_second"] = k / (s * art.spec.steps)
        row["tflops"] = flops / s / 1e12 if flops else None
        if backend == "torch":
            base = s
        elif base:
            row["vs_torch"] = base / s
    return row, base


def bench(sizes, modes, batches, backends, timing: Timing, cache: str | None, log=print) -> dict:
    cache = cache or os.path.join(tempfile.gettempdir(), "dgn-engine-bench")
    os.makedirs(cache, exist_ok=True)
    rows = []
    for size in sizes:
        for mode in modes:
            for k in batches:
                art = artifacts_for(size, mode, k, cache, backends)
                rows += bench_group(art, size, backends, timing, log)
    return result(rows, timing)


def bench_artifacts(path: str, backends, timing: Timing, log=print) -> dict:
    from .artifacts import load_artifacts

    art = load_artifacts(path)
    return result(bench_group(art, os.path.basename(os.path.abspath(path)), backends, timing, log), timing)


def result(rows, timing: Timing) -> dict:
    return {
        "rows": rows,
        "device": timing.device,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps": timing.steps,
        "warmup": timing.warmup,
    }


def machine() -> dict:
    import onnxruntime

    info = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


HEADER = (
    f"{'size':12s} {'mode':10s} {'backend':18s} {'K':>3s} {'s/step':>8s} {'targets/s':>10s} "
    f"{'vs torch':>8s} {'TFLOP/s':>8s} {'peak RSS':>9s} {'GPU mem':>8s}"
)


def _label(size: str) -> str:
    """demo, full, or a classifier's short name (the factory, or the file's name)."""
    return os.path.splitext(os.path.basename(size.rpartition(":")[2]))[0][:12]


def format_row(r: dict) -> str:
    backend = r["backend"] + (f" {r['precision']}" if r.get("precision", "float32") != "float32" else "")
    if "error" in r:
        return f"{_label(r['size']):12s} {r['mode']:10s} {backend:18s} {r['k']:3d}  failed: {r['error']}"
    vs = f"{r['vs_torch']:.2f}x" if r.get("vs_torch") else "-"
    tf = f"{r['tflops']:.3f}" if r.get("tflops") else "-"
    gpu = f"{r['gpu_memory_mib']:.0f}M" if r.get("gpu_memory_mib") else "-"
    return (
        f"{_label(r['size']):12s} {r['mode']:10s} {backend:18s} {r['k']:3d} {r['seconds_per_step']:8.4f} "
        f"{r['targets_per_second']:10.4f} {vs:>8s} {tf:>8s} {r['peak_rss_mib']:8.0f}M {gpu:>8s}"
    )


def parse_list(text: str, allowed=None, kind=str, what: str = "value") -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"{what}: expected comma-separated {'integers' if kind is int else 'names'}, got {text!r}"
        ) from None
    if not values:
        raise UsageError(f"{what}: give at least one value")
    if kind is int and min(values) < 1:
        raise UsageError(f"{what}: every value must be at least 1, got {text!r}")
    if allowed:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise UsageError(f"unknown value {bad[0]!r}; choose from {', '.join(allowed)}")
    return values
