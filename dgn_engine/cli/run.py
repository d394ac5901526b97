"""dgn-engine run: synthesise the preferred input of each target."""

from __future__ import annotations

import argparse
import os

from .. import demo
from ..digests import sha256_json
from ..errors import UsageError
from ..spec import PRECISIONS, RunSpec
from .common import (
    THREADS,
    add_classifier_options,
    add_device_option,
    add_method_options,
    classifier_spec,
    ensure_writable_dir,
    folder,
    integer,
    need_torch,
    read_lines,
    set_threads,
    shard,
    sources_from_args,
    spec_from_args,
)

HELP = "synthesise preferred inputs for targets (classes, filters, neurons)"
DESCRIPTION = """\
Couples a generator G to the classifier D and, for each target, optimises G's free values by
backpropagation through the frozen D so that G's image drives the target as high as possible.
Writes OUT/targets/<id>.png (the median of the last snapshots, as the paper shows, or with --pick
best the one D scores highest), <id>.json (final activation, top-5 of D on the written PNG, loss
curve) and OUT/run.json. Running the same
command again skips finished targets. Without --artifacts and classifier options it runs the
embedded Fashion-MNIST demo (exported once into ~/.cache/dgn-engine where torch is installed,
else its prebuilt artifacts shipped in the package).

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
        "in onnxruntime-training (its own environment, see the README); both run --artifacts, "
        "else the embedded demo. torch: the eager torch reference, built from the classifier "
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
        help="targets optimised together (default: the artifacts' batch; 1 for --backend torch)",
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
    p.set_defaults(func=main)


def requested_targets(args) -> list[str]:
    targets = list(args.target)
    if args.targets_file:
        targets += read_lines(args.targets_file, "targets file")
    if not targets and not args.all_classes:
        raise UsageError("say what to synthesise: --target SPEC, --targets-file FILE or --all-classes")
    return targets


def resolved(args: argparse.Namespace, **choices) -> argparse.Namespace:
    """A copy of the parsed options with what they left open decided (the parsed ones stay as given)."""
    return argparse.Namespace(**{**vars(args), **choices})


def main(args) -> int:
    from ..targets import all_classes, parse_target

    targets = [parse_target(t).text for t in requested_targets(args)]
    if args.workers is not None and args.ray is None:
        raise UsageError("--workers N sets how many Ray workers --ray starts; add --ray, or leave --workers out")
    if args.ray is not None and args.backend == "torch":
        raise UsageError("--ray runs exported graphs on its workers; use --backend step-graph (the default)")
    if args.backend == "training-api":
        from ..engine.backends.training_api import training_bindings

        training_bindings()  # installed, or one line saying how
    art = None
    if args.artifacts:
        from ..artifacts import load_artifacts

        art = load_artifacts(args.artifacts)
        if args.mode and args.mode != art.mode:
            raise UsageError(f"the artifacts in {args.artifacts!r} are for --mode {art.mode}, not {args.mode}")
        check_fixed_options(args, art)
        args = resolved(args, backend=args.backend or art.backends[0])
    elif args.classifier is None and args.weights is None:  # the embedded demo
        args = resolved(args, backend=args.backend or "step-graph")
        if args.backend != "torch":
            mode = args.mode or "pretrained"
            art = demo_artifacts(mode, args.backend, spec_from_args(args, [], base=demo.spec(mode)))
        else:
            args = resolved(args, classifier=demo.NAME)
    elif args.backend != "torch":
        raise UsageError(
            f"the {args.backend or 'step-graph'} backend runs exported artifacts: dgn-engine export ... "
            "--out DIR, then run --artifacts DIR (or use --backend torch)"
        )
    # the demo's own defaults, not those its cached artifacts were first exported with (they fix the structure)
    is_demo = args.classifier == demo.NAME or (art is not None and not args.artifacts)
    args = resolved(args, display=args.display or (demo.DISPLAY if is_demo else "model"))
    if is_demo:
        base = demo.spec(art.mode if art else args.mode or "pretrained")
    elif art:
        base = art.spec
    else:  # --backend torch on a classifier: its defaults depend on its input size
        need_torch("--backend torch")
        base = classifier_spec(args)
    spec = spec_from_args(args, targets, base=base)  # fail fast on bad settings
    if art:
        art.check_spec(spec)
    ensure_writable_dir(args.out)
    if args.ray is not None:
        check_batch(args, art)
        backend, layers = None, art.manifest["taps"]
        layout = art.layout
    else:
        backend, layers = make_backend(args, art, spec, targets)
        layout = backend.layout
    if args.all_classes:
        targets = [t.text for t in all_classes(layout["output"][0])] + targets
    check_targets(targets, layout, layers, art)
    labels = read_lines(args.labels, "labels file") if args.labels else None
    if labels is not None and len(labels) != layout["output"][0]:
        raise UsageError(
            f"labels file {args.labels!r} has {len(labels)} names, the classifier has {layout['output'][0]} classes"
        )
    spec = spec_from_args(args, list(dict.fromkeys(targets)), base=base)
    batch = args.batch or (art.batch if art and args.backend != "torch" else 1)
    if args.ray is not None:
        from ..api import ray_runner

        batches = -(-len(spec.targets) // batch)
        most = -(-batches // args.shard[1]) if args.shard else batches
        with ray_runner(
            art, args.backend, args.ray, args.workers, args.device, args.threads, args.precision, most=most
        ) as runner:
            return finish(runner, args, spec, labels, batch, layers)
    return finish(backend, args, spec, labels, batch, layers)


def finish(runner, args, spec: RunSpec, labels, batch: int, layers: list[str]) -> int:
    """The job over `runner` (or a backend) into --out."""
    from ..api import run_job
    from ..targets import parse_target

    done = run_job(
        runner,
        spec,
        [parse_target(t) for t in spec.targets],
        args.out,
        batch=batch,
        labels=labels,
        display=args.display,
        force=args.force,
        progress=not args.quiet,
        layers=layers,
        log=print,
        shard=args.shard,
    )
    if done.get("gallery"):
        print(f"gallery: {done['gallery']}")
    return 0


def demo_artifacts(mode: str, backend: str, wanted: RunSpec | None = None):
    """The demo's artifacts: exported once into the cache where torch is installed (a fresh export of
    the shipped weights), else the prebuilt step-graph ones shipped in the package. `wanted`: the run's
    spec, whose structural choices (transforms, image range, ...) the artifacts must have."""
    from ..artifacts import FORMAT_VERSION, MANIFEST, load_artifacts

    spec = wanted or demo.spec(mode)
    shipped = spec.structure() == demo.spec(mode).structure()

    try:
        import torch  # noqa: F401
    except ImportError:
        if backend != "step-graph" or not shipped:
            what = f"the {backend} backend" if backend != "step-graph" else "other structural settings"
            raise UsageError(
                f"the package ships the demo for the step-graph backend and its default settings only; {what} "
                f"({', '.join(f'{k} {v}' for k, v in spec.structure().items())}) need it exported, which needs "
                "torch: pip install 'dgn-engine[export]'"
            ) from None
        return load_artifacts(demo.shipped_artifacts(mode))
    from .._version import __version__
    from ..exporter.manifest import export_demo

    settings = sha256_json(spec.structure())[:8]  # what the graphs fix
    name = f"demo-{mode}-{backend}-{demo.fingerprint()}-{settings}-v{FORMAT_VERSION}-{__version__}"
    out = os.path.join(demo.cache_dir(), name)
    if not os.path.isfile(os.path.join(out, MANIFEST)):
        try:
            os.makedirs(demo.cache_dir(), exist_ok=True)
            print(f"exporting the embedded demo ({mode} mode, {backend} backend) into {out} (once)")
            return export_demo(mode, out, backends=(backend,), spec=spec)
        except OSError:  # an unwritable cache: the shipped artifacts are the same export
            if backend != "step-graph" or not shipped:
                raise UsageError(
                    f"cannot write the demo's {backend} artifacts into {demo.cache_dir()!r}; "
                    "set DGN_ENGINE_CACHE to a writable folder"
                ) from None
            return load_artifacts(demo.shipped_artifacts(mode))
    return load_artifacts(out)


def check_fixed_options(args, art) -> None:
    """The artifacts fix D, G and the input format: an option that says otherwise is refused, not
    silently ignored."""
    sources, pp = art.manifest["sources"], art.preprocessing

    def same_file(given, recorded):  # a name (vgg16, demo, module:factory) or a path
        if recorded is None:
            return False
        both_files = os.path.exists(given) and os.path.exists(recorded)
        return given == recorded or (both_files and os.path.samefile(given, recorded))

    given = {
        "--classifier": (args.classifier, lambda v: same_file(v, sources.get("classifier"))),
        "--weights": (args.weights, lambda v: same_file(v, sources.get("weights"))),
        "--decoder": (args.decoder, lambda v: same_file(v, sources.get("decoder"))),
        "--image-size": (args.image_size, lambda v: v == pp.image_size),
        "--channels": (args.channels, lambda v: v == pp.order),
        "--mean": (args.mean, lambda v: tuple(v) == tuple(pp.mean)),
        "--std": (args.std, lambda v: tuple(v) == tuple(pp.std)),
        "--g-width": (args.g_width, lambda v: v == sources.get("g_width")),
        "--spectrum": (args.spectrum, lambda v: same_file(v, sources.get("spectrum"))),
        "--keep-softmax": (args.keep_softmax or None, lambda v: v == sources.get("keep_softmax", False)),
    }
    clash = [name for name, (value, agrees) in given.items() if value is not None and not agrees(value)]
    if clash:
        raise UsageError(
            f"the artifacts in {art.path!r} fix {', '.join(clash)} (they were exported with other "
            f"values); leave {'them' if len(clash) > 1 else 'it'} out, or export again with the values "
            "you want"
        )


def check_targets(targets: list[str], layout, layers: list[str], art) -> None:
    from ..targets import check_target, parse_target

    for text in targets:
        target = parse_target(text)
        if art is not None:
            art.require_taps(target)
        check_target(target, layout, layers)


def check_batch(args, art) -> None:
    if args.batch is not None and args.batch != art.batch:
        raise UsageError(
            f"the artifacts in {art.path!r} run batches of {art.batch}; omit --batch or "
            f"export again with --batch {args.batch}"
        )


def make_backend(args, art, spec, targets: list[str]):
    """(backend, the layer names D has) for the chosen backend."""
    from ..engine.backends import engine_backend
    from ..targets import parse_target

    if args.backend != "torch":
        check_batch(args, art)
        return engine_backend(args.backend, art, args.device, args.threads, args.precision), art.manifest["taps"]
    need_torch("--backend torch")
    from ..engine.backends.torch_reference import TorchBackend
    from ..exporter.coupled import Sources, build_coupled

    set_threads(args.threads)
    taps = sorted({layer for t in targets for layer in parse_target(t).layers})
    sources = Sources.from_json(art.manifest["sources"]) if art else sources_from_args(args)
    coupled = build_coupled(sources, spec, taps)
    return TorchBackend(coupled, args.precision, args.device), coupled.classifier.layer_names()
