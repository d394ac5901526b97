"""dgn-engine verify: the engine's paths against the float64 torch reference."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .common import THREADS, add_device_option, integer, need_torch

HELP = "check the engine's backends numerically against the torch reference (float32 and float64)"
DESCRIPTION = """\
Runs N steps of the same targets, initial state and noise on each engine backend the artifacts
serve and this environment can run (the step graph in onnxruntime; the training model in
onnxruntime-training where that is installed), on the torch reference in float32 and in float64
(rebuilt from the source files the manifest records, checked by sha256), and prints per path the
worst relative error of the state and of the loss against float64, with the tolerance beside it.
Exit code 1 when one is exceeded.

With --no-torch (where only the runtime is installed) it checks each backend against the
artifacts' own G and D graphs instead: the same image and loss, and a gradient that agrees with
finite differences of that loss."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifacts", required=True, metavar="DIR", help="an artifacts folder (dgn-engine export)")
    p.add_argument("--steps", type=integer(1, 10_000), default=5, help="steps to compare (default: %(default)s)")
    add_device_option(p)
    p.add_argument("--threads", type=THREADS, help="CPU threads (default: all cores)")
    p.add_argument(
        "--no-torch",
        action="store_true",
        help="engine only: the step graph against render.onnx and classifier.onnx (no torch needed)",
    )
    p.set_defaults(func=main)


def runnable_backends(art, log=print) -> list[str]:
    """The backends the artifacts serve that this environment can run; says why any other is left out."""
    from ..engine.backends.training_api import training_bindings

    try:
        training_bindings()
        has_training = True
    except UsageError:
        has_training = False
    if has_training and "training-api" not in art.backends:
        log("training-api: not in these artifacts (export them with --backend training-api too to check it)")
    if not has_training and "training-api" in art.backends:
        log("training-api: not checked here (onnxruntime-training is not installed in this environment)")
    return [name for name in art.backends if name != "training-api" or has_training]


def main(args) -> int:
    from ..artifacts import load_artifacts
    from ..engine.backends import engine_backend

    art = load_artifacts(args.artifacts)
    names = runnable_backends(art)
    if not names:
        raise UsageError(
            f"this environment can run none of the backends the artifacts in {art.path!r} serve "
            f"({', '.join(art.backends)})"
        )
    if args.no_torch:
        from ..engine.selfcheck import selfcheck

        ok = all([selfcheck(art, args.device, backend=name) for name in names])
        print("verify: all checks within tolerance" if ok else "verify: FAILED")
        return 0 if ok else 1
    need_torch("verify (the torch reference; or use --no-torch)")
    from ..exporter.verify import check_sources, verify
    from .common import set_threads

    set_threads(args.threads)
    check_sources(art)
    backends = [engine_backend(name, art, args.device, args.threads) for name in names]
    ok, _ = verify(art, args.steps, args.device, engine_backends=backends)
    print("verify: all paths within tolerance" if ok else "verify: FAILED")
    return 0 if ok else 1
