"""dgn-engine run: synthesise the preferred input of each target."""

from __future__ import annotations

import argparse

from .. import demo
from ..errors import UsageError
from ..spec import PRECISIONS
from .common import (
    THREADS,
    add_classifier_options,
    add_device_option,
    add_method_options,
    choices_of,
    folder,
    integer,
    method_settings,
    shard,
    targets_of,
)

HELP = "synthesise preferred inputs for targets (classes, filters, neurons)"
DESCRIPTION = """\
Couples a generator G to the classifier D and, for each target, optimises G's free values by
backpropagation through the frozen D so that G's image drives the target as high as possible.
Writes OUT/targets/<id>.png (the median of the last snapshots, as the paper shows, or with --pick
best the one D scores highest), <id>.json (final activation, top-5 of D on the written PNG, loss
curve) and OUT/run.json. Running the same command again skips finished targets. A classifier
(--classifier) runs on its step graph too: G + D are exported once into ~/.cache/dgn-engine/exports
(keyed by D's and G's tensors and the structural settings) and reused. Without --artifacts and
classifier options it runs the embedded Fashion-MNIST demo (exported once into the cache where torch
is installed, else its prebuilt artifacts shipped in the package).

Targets: class:668, channel:features.28:17 (a filter's mean activation), neuron:features.28:17:7:7
(neuron:blocks.3:17:5 for token 5 of a [tokens, features] layer), weighted mixes such as
0.5*class:9+class:339. Defaults follow the paper per mode (Table 1)."""


def add_parser(sub) -> None:
    p = sub.add_parser("run", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to synthesise")
    what.add_argument("--target", action="append", default=[], metavar="SPEC", help="a target (repeat for several)")
    what.add_argument("--targets-file", metavar="FILE", help="targets, one per line")
    what.add_argument("--all-classes", action="store_true", help="every class of D, one target each")
    what.add_argument("--labels", metavar="FILE", help="class names, one per line, for the results")
    results = p.add_argument_group("results")
    results.add_argument("--out", required=True, type=folder, metavar="DIR", help="results folder (created if missing)")
    results.add_argument(
        "--force", action="store_true", help="recompute targets in OUT whose results were made with other settings"
    )
    source = p.add_argument_group("what runs")
    source.add_argument("--artifacts", metavar="DIR", help="an artifacts folder made by dgn-engine export")
    source.add_argument(
        "--backend",
        choices=("step-graph", "training-api", "torch"),
        help="step-graph: the exported step graph in onnxruntime; training-api: the training model "
        "in onnxruntime-training (its own environment, see the README); both run --artifacts, or "
        "the classifier's export cached once. torch: the eager torch reference, built from the classifier "
        "options or from the files the artifacts' manifest names (default: the first backend "
        "the artifacts serve, else step-graph)",
    )
    add_classifier_options(p, default=None, scores=True)
    add_method_options(p)
    e = p.add_argument_group("execution")
    e.add_argument(
        "--batch",
        type=integer(1),
        metavar="K",
        help="targets optimised together (default: the artifacts' batch; 1 for --backend torch; else "
        "equal batches of at most 8, or 4 on a CPU for inputs of 128 px and more; the demo's 5)",
    )
    add_device_option(e)
    e.add_argument(
        "--shard",
        type=shard,
        metavar="I/N",
        help="run only the I-th of N disjoint slices of the batches (0/N .. N-1/N: a Slurm array or "
        "Kubernetes indexed job runs one each), into its own --out or a shared one; the batches are cut "
        "as in a whole run, so the results are the same files. dgn-engine gallery --into merges folders",
    )
    e.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the batches on Ray workers, one per GPU (CPU workers, --threads CPUs each, where the "
        "cluster has no GPUs); this command hands out the batches and writes every file. No ADDRESS: "
        "a local Ray on this machine; auto: the cluster this machine is part of (ray start); "
        "HOST:PORT: a cluster's head (the address ray start prints); ray://HOST:PORT: a remote "
        "cluster through Ray Client. Needs: pip install 'dgn-engine[ray]'",
    )
    e.add_argument(
        "--workers",
        type=integer(1),
        metavar="N",
        help="Ray workers (with --ray; default: one per GPU of the cluster, else one per --threads CPUs)",
    )
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="float32: IEEE single precision (what verify checks); tf32: on CUDA, convolutions and "
        "matrix products on the tensor cores in TensorFloat-32, faster and ~1e-3 relative error "
        "per product (the CPU runs float32 then); float64: --backend torch only. run.json "
        "records what ran (default: %(default)s)",
    )
    e.add_argument("--threads", type=THREADS, metavar="N", help="CPU threads (default: all cores)")
    e.add_argument(
        "--display",
        choices=("model", "contrast", "original"),
        help="model: the PNG is the image D saw, through its preprocessing; contrast: that image "
        "stretched to the full 0..255 range (one linear map per image); original: per-image min-max in "
        "D's input space (and a square root for untrained G), as the original code showed it. D's top-5 "
        "is on the PNG written, and with contrast or original on the model view too (default: model; "
        "contrast for the embedded demo, whose decoder's images are dim)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(request=request)


def request(args):
    """The session.Request these options make (the table in cli/main.py hands it to session.run)."""
    from ..artifacts import load_artifacts
    from ..session import Execution, Request

    targets = targets_of(args)
    if not targets and not args.all_classes:
        raise UsageError("say what to synthesise: --target SPEC, --targets-file FILE or --all-classes")
    given = ("backend", "device", "batch", "precision", "threads", "ray", "workers", "shard", "out", "force", "display")
    ex = Execution(**{name: getattr(args, name) for name in given}, progress=not args.quiet, log=print)
    model = args.classifier or ("vgg16" if args.weights else demo.NAME)  # --weights name the real VGG-16's
    if args.artifacts:
        model = load_artifacts(args.artifacts)
    choices = choices_of(args, model, beside=args.classifier if args.artifacts else None)
    return Request(**choices, method=method_settings(args), execution=ex, targets=targets, all_classes=args.all_classes)
