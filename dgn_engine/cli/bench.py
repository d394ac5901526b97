"""dgn-engine bench: the engine against the torch reference, as ratios measured in one run."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .common import THREADS, add_device_option, ensure_writable_dir, folder, integer

HELP = "time the engine's backends against torch eager (and torch.compile) on the same work"
DESCRIPTION = """\
For each size x mode x batch K, times one optimisation step of every backend on the same work in
one run, each in its own process: seconds per step, targets per second (K / (s/step x the steps per
target the settings take)), the ratio against torch eager at the same K, the achieved TFLOP/s from the
step's FLOP count, and the peak memory (RSS; GPU memory on CUDA). Sizes: demo (the embedded demo at
its defaults), full (VGG-16 + the paper's G at Table 1's settings, random weights: timing does not
depend on the values), or any --classifier name (module:factory, a TorchScript or ONNX file) with the
G and settings that `run` takes for its input size by default (a random decoder in pretrained mode).
Artifacts are exported once into --cache.
With --artifacts DIR only that folder is timed (no torch needed for --backends step-graph). The
training-api backend runs where onnxruntime-training is installed (its own environment).

With --quality it measures what the images are worth instead: for classifier D (--classifier,
default the demo) it synthesises --classes class targets spread over D's classes per mode and
--transforms setting, and scores the written PNGs with D (top-1 share, mean probability of the
target) and with each --judge, classifiers that never saw the search (top-1 and top-5 shares),
plus D's seconds per target. The demo brings two judges (a small ResNet and an MLP).

With --cost it times nothing and needs no GPU: it reads the step graph and gives, per node role
(forward, input gradient, weight gradient, update, bookkeeping), the FLOPs and the bytes its nodes
move, beside the same for torch autograd's step on the model the graph was exported from (where torch
is installed), and the ratio graph/torch of the convolution and matrix-product FLOPs, for each size x
mode x K (default: the demo's shipped artifacts, K 5; other modes and K are exported into --cache),
or for --artifacts DIR alone. dgn_engine/cost.py states the rules."""


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
    p.add_argument(
        "--modes",
        help="comma-separated modes (default: pretrained,untrained; with --quality untrained,pixel,maco, and "
        "pretrained too for the demo or with --decoder)",
    )
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
    p.add_argument(
        "--steps",
        type=integer(1, 1_000_000),
        help="timed steps per row (default: 10); with --quality steps per target (default: each mode's)",
    )
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
        help="for step-graph rows, onnxruntime's profiler: each op type's share of the step's time, then each "
        "role's (forward, input gradient, weight gradient, update, bookkeeping as --cost names them, and "
        "layout: the reorders onnxruntime adds itself; needs the onnx package) (its "
        "overhead is in those rows' times: read the shares, not the seconds; on CUDA it times the nodes "
        "on the host while kernels run asynchronously, so there the shares are a lead)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--cost",
        action="store_true",
        help="count instead of timing: FLOPs and bytes moved per node role of the step graph, beside torch "
        "autograd's (no GPU needed; --batch defaults to the demo's shipped artifacts' K)",
    )
    q = p.add_argument_group("--quality")
    q.add_argument("--quality", action="store_true", help="measure the images' quality instead of the speed")
    q.add_argument("--classifier", default="demo", help="D, as run takes it (default: %(default)s)")
    q.add_argument("--weights", metavar="FILE", help="D's weights, where --classifier needs them")
    q.add_argument("--decoder", metavar="FILE", help="the pretrained G, for pretrained mode")
    q.add_argument("--spectrum", metavar="DIR", help="maco mode's photo folder (default: the 1/f power law)")
    q.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="NAME",
        help="a judge classifier with D's classes (module:factory, a TorchScript or ONNX file); repeat "
        "for several (default for the demo: its ResNet and MLP judges)",
    )
    q.add_argument(
        "--classes", type=integer(1, 100_000), default=10, help="class targets, spread over D's (default: %(default)s)"
    )
    q.add_argument("--seeds", default="0", help="comma-separated seeds; shares are over all (default: %(default)s)")
    q.add_argument(
        "--transforms",
        default="default",
        help="comma-separated: default (each mode's), none, standard; settings with numbers "
        "(jitter=J,scale=S,rotate=DEG) are separated by ';' (default: %(default)s)",
    )
    q.add_argument("--out", type=folder, metavar="DIR", help="keep the runs here (default: a temporary folder)")
    p.set_defaults(func=main)


def quality_main(args) -> int:
    from ..files import write_json
    from ..quality import quality

    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("bench --quality runs the judges in torch: pip install 'dgn-engine[export]'") from None
    if args.modes:
        modes = parse_modes(args.modes)
    else:
        with_decoder = args.classifier == "demo" or args.decoder
        modes = ["untrained", *(["pretrained"] * bool(with_decoder)), "pixel", "maco"]
    transforms = parse_transform_settings(args.transforms)
    if args.out:
        ensure_writable_dir(args.out)
    rows = quality(
        args.classifier,
        args.judge,
        modes,
        transforms,
        args.classes,
        args.steps,
        parse_seeds(args.seeds),
        args.out,
        args.decoder,
        args.weights,
        args.device,
        spectrum=args.spectrum,
    )
    if args.json:
        write_json(args.json, rows)
    return 0


def parse_modes(text: str) -> list[str]:
    from ..bench import parse_list
    from ..generators import REGISTRY

    return parse_list(text, tuple(REGISTRY), what="--modes")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds: expected comma-separated integers >= 0, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds: expected comma-separated integers >= 0, got {text!r}")
    return seeds


def parse_transform_settings(text: str) -> list[str]:
    """Settings separated by ',' (names), or by ';' where a setting has numbers (jitter=J,...)."""
    from ..spec import parse_transforms

    settings = [t.strip() for t in text.split(";" if "=" in text else ",") if t.strip()]
    for t in settings:
        if t != "default":
            parse_transforms(t)  # one line now, not after the first runs
    return settings


def cost_main(args) -> int:
    from ..bench import parse_list
    from ..cost import FOOTNOTE, TORCH_COVERS, cost, cost_artifacts
    from ..files import write_json

    batches = parse_list(args.batch, kind=int, what="--batch") if args.batch else None
    if args.artifacts:
        if args.batch:
            from ..artifacts import load_artifacts

            art = load_artifacts(args.artifacts)
            if batches != [art.batch]:
                raise UsageError(
                    f"the artifacts in {args.artifacts!r} hold a step of K = {art.batch} only; leave out --batch, "
                    "or export them again with the batch you want"
                )
        rows = cost_artifacts(args.artifacts)
    else:
        rows = cost(
            parse_list(args.sizes, what="--sizes"),
            parse_modes(args.modes or "pretrained,untrained"),
            batches,
            args.cache,
        )
    if any(r.get("torch") for r in rows):
        print(FOOTNOTE)
    if args.json:
        write_json(args.json, {"cost": rows, "torch_covers": TORCH_COVERS})
    return 0


def main(args) -> int:
    from ..bench import BACKENDS, HEADER, Timing, bench, bench_artifacts, parse_list
    from ..files import write_json
    from ..spec import ENGINE_PRECISIONS

    if args.json:
        if os.path.isdir(args.json):
            raise UsageError(f"--json {args.json!r} is a folder; give a file name")
        ensure_writable_dir(os.path.dirname(os.path.abspath(args.json)), "folder of --json")
    if args.cost:  # counts from the graphs: no device, no onnxruntime
        if args.quality:
            raise UsageError("--cost and --quality are two different measures; give one of them")
        return cost_main(args)
    from ..engine.backends.onnx_session import providers

    backends = parse_list(args.backends, BACKENDS, what="--backends")
    batches = parse_list(args.batch or "1", kind=int, what="--batch")
    precisions = parse_list(args.precision, ENGINE_PRECISIONS, what="--precision")
    device = providers(args.device)[1]  # one device for every row, torch's included
    if "tf32" in precisions and device != "cuda":
        raise UsageError("--precision tf32 is a CUDA mode (the CPU computes float32): use it where CUDA is available")
    if args.quality:
        return quality_main(args)
    timing = Timing(device, args.steps or 10, args.warmup, args.threads, tuple(precisions), args.profile)
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
            parse_modes(args.modes or "pretrained,untrained"),
            batches,
            backends,
            timing,
            args.cache,
        )
    if args.json:
        write_json(args.json, result)
    return 0
