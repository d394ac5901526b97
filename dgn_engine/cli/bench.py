"""dgn-engine bench: the engine against the torch reference, as ratios measured in one run."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .common import THREADS, add_device_option, ensure_writable_dir, integer

HELP = "time the engine's backends against torch eager (and torch.compile) on the same work"
DESCRIPTION = """\
For each size x mode x batch K, times one optimisation step of every backend on the same work in
one run, each in its own process: seconds per step, targets per second (K / (s/step x the mode's
steps per target: 1200 pretrained, 500 untrained)), the ratio against torch eager at the same K,
the achieved TFLOP/s from the step's FLOP count, and the peak memory (RSS; GPU memory on CUDA).
Sizes: demo (the embedded demo), full (VGG-16 + the paper's G, random weights: timing does not
depend on the values), or any --classifier name (module:factory, a TorchScript or ONNX file) with a G
of its input size (a random decoder in pretrained mode). Artifacts are exported once into --cache.
With --artifacts DIR only that folder is timed (no torch needed for --backends step-graph). The
training-api backend runs where onnxruntime-training is installed (its own environment)."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_option(p)
    p.add_argument(
        "--sizes",
        default="demo",
        help="comma-separated: demo, full, or classifier names as --classifier takes them (default: %(default)s)",
    )
    p.add_argument("--modes", default="pretrained,untrained", help="(default: %(default)s)")
    p.add_argument(
        "--batch",
        help="comma-separated batch sizes K (default: 1; with --artifacts their batch, the only one its graphs run)",
    )
    p.add_argument(
        "--backends",
        default="step-graph,torch",
        help="comma-separated: step-graph, training-api, torch, torch-compile (default: %(default)s)",
    )
    p.add_argument("--artifacts", metavar="DIR", help="time this artifacts folder only")
    p.add_argument("--steps", type=integer(1, 100_000), default=10, help="timed steps per row (default: %(default)s)")
    p.add_argument("--warmup", type=integer(0, 100_000), default=2, help="untimed steps first (default: %(default)s)")
    p.add_argument(
        "--precision",
        default="float32",
        help="comma-separated: float32, tf32 (CUDA tensor cores; the CPU runs float32); each "
        "precision's rows are compared with torch at that precision (default: %(default)s)",
    )
    p.add_argument("--threads", type=THREADS, help="CPU threads for every backend (default: all cores)")
    p.add_argument("--cache", metavar="DIR", help="where exported artifacts are kept (default: a temp folder)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="for step-graph rows, onnxruntime's profiler: each op type's share of the step's time (its "
        "overhead is in those rows' times: read the shares, not the seconds; on CUDA it times the nodes "
        "on the host while kernels run asynchronously, so there the shares are a lead)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..bench import BACKENDS, HEADER, Timing, bench, bench_artifacts, parse_list
    from ..engine.backends.onnx_session import providers
    from ..files import write_json
    from ..spec import ENGINE_PRECISIONS, MODES

    backends = parse_list(args.backends, BACKENDS, what="--backends")
    batches = parse_list(args.batch or "1", kind=int, what="--batch")
    precisions = parse_list(args.precision, ENGINE_PRECISIONS, what="--precision")
    device = providers(args.device)[1]  # one device for every row, torch's included
    if "tf32" in precisions and device != "cuda":
        raise UsageError("--precision tf32 is a CUDA mode (the CPU computes float32): use it where CUDA is available")
    timing = Timing(device, args.steps, args.warmup, args.threads, tuple(precisions), args.profile)
    if args.json:
        if os.path.isdir(args.json):
            raise UsageError(f"--json {args.json!r} is a folder; give a file name")
        ensure_writable_dir(os.path.dirname(os.path.abspath(args.json)), "folder of --json")
    if args.artifacts and args.batch:
        from ..artifacts import load_artifacts

        art = load_artifacts(args.artifacts)
        if batches != [art.batch]:
            raise UsageError(
                f"the artifacts in {args.artifacts!r} run batches of {art.batch} only; leave out "
                "--batch, or export them again with the batch you want"
            )
    print(HEADER)
    if args.artifacts:
        result = bench_artifacts(args.artifacts, backends, timing)
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError(
                "bench exports its artifacts with torch: pip install 'dgn-engine[export]', or time "
                "an artifacts folder with --artifacts DIR --backends step-graph"
            ) from None
        result = bench(
            parse_list(args.sizes, what="--sizes"),
            parse_list(args.modes, MODES, what="--modes"),
            batches,
            backends,
            timing,
            args.cache,
        )
    if args.json:
        write_json(args.json, result)
    return 0
