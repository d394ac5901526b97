"""dgn-engine export: write the artifacts that `run` executes in onnxruntime."""

from __future__ import annotations

import argparse

from .common import (
    THREADS,
    add_classifier_options,
    add_method_options,
    classifier_spec,
    folder,
    integer,
    need_torch,
    read_lines,
    set_threads,
    sources_from_args,
    spec_from_args,
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
    p.set_defaults(func=main)


def main(args) -> int:
    need_torch("export")
    from ..exporter.coupled import build_coupled
    from ..exporter.manifest import export_artifacts, prepare_out
    from ..exporter.step_graph import check_backends
    from ..targets import parse_target

    backends = args.backend or ["step-graph"]
    spec = spec_from_args(args, [], base=classifier_spec(args))
    check_backends(spec, backends)
    if "training-api" in backends:
        from ..exporter.training_api import training_api

        training_api()  # installed, or one line saying how
    prepare_out(args.out, args.force)
    set_threads(args.threads)
    targets = list(args.target) + (read_lines(args.targets_file, "targets file") if args.targets_file else [])
    taps = list(dict.fromkeys(args.taps + sorted({layer for t in targets for layer in parse_target(t).layers})))
    coupled = build_coupled(sources_from_args(args), spec, taps)
    export_artifacts(coupled, spec, sources_from_args(args), args.batch, args.out, args.force, backends=backends)
    return 0
