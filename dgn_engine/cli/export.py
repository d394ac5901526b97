"""dgn-engine export: write the artifacts that `run` executes in onnxruntime."""

from __future__ import annotations

import argparse

from .common import (
    THREADS,
    add_classifier_options,
    add_method_options,
    choices_of,
    folder,
    integer,
    method_settings,
    targets_of,
)

HELP = "export G + D as ONNX graphs (one optimisation step of K targets) plus a manifest"
DESCRIPTION = """\
Builds G and D in torch from the files you name, traces one whole optimisation step (forward,
backward, AdaMax or Nesterov update) of K targets into one standard-ONNX graph, and writes an
artifacts folder: step.onnx, render.onnx (G alone), classifier.onnx (D alone), weights.bin (their
constants, stored once) and manifest.json. Mode, optimiser, noise kind and regulariser are fixed by
the export; learning rate, momentum, noise sigma, regulariser weight, lambda, steps and seed stay
free for each run. Channel and neuron targets need their layer exported: --taps (or --target).

--backend training-api (repeatable with step-graph) writes instead, or as well, onnxruntime-training
artifacts: training.onnx (G + D + the objective, with onnxruntime's own gradient graph) and a
checkpoint of the trainables; it runs where onnxruntime-training 1.19.2 and onnx 1.17 are installed
(their own virtual environment: see the README)."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, type=folder, metavar="DIR", help="the artifacts folder to write")
    p.add_argument(
        "--batch",
        type=integer(1, 4096),
        default=1,
        metavar="K",
        help="targets per step graph: K rows of alpha (pretrained) or K generators as one grouped "
        "network (untrained) (default: %(default)s)",
    )
    p.add_argument(
        "--taps",
        nargs="+",
        default=[],
        metavar="LAYER",
        help="layers whose activations channel/neuron targets may read: any named module of D, "
        "a single layer or a whole block (features.28, layer3, layer3.1.conv2)",
    )
    p.add_argument(
        "--target", action="append", default=[], metavar="SPEC", help="a target whose layers are tapped (repeatable)"
    )
    p.add_argument("--targets-file", metavar="FILE", help="targets whose layers are tapped, one per line")
    p.add_argument(
        "--backend",
        action="append",
        choices=("step-graph", "training-api"),
        metavar="NAME",
        help="what the artifacts are for: step-graph (default) or training-api; repeat for both",
    )
    p.add_argument("--force", action="store_true", help="replace the artifacts already in --out")
    p.add_argument("--threads", type=THREADS, help="CPU threads for tracing (default: all cores)")
    add_classifier_options(p, scores=True)
    add_method_options(p)
    p.set_defaults(request=request)


def request(args):
    """The session.Request these options make (the table in cli/main.py hands it to session.export)."""
    from ..session import Execution, Request

    ex = Execution(backends=tuple(args.backend or ["step-graph"]), batch=args.batch, threads=args.threads,
                   out=args.out, force=args.force, log=print)  # fmt: skip
    return Request(**choices_of(args, args.classifier), method=method_settings(args), execution=ex,
                   targets=targets_of(args), taps=tuple(args.taps))  # fmt: skip
