"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..errors import UsageError
from ..generators import REGISTRY
from ..preprocessing import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from ..records import read_lines  # noqa: F401 (the commands read their text files through it)
from ..spec import (
    DEVICES,
    GAUSSIAN_DROPOUT_SIGMA,
    IMAGE_RANGES,
    MAX_STEPS,
    NOISE_SCHEDULES,
    OPTIMIZERS,
    REGULARIZERS,
    SETTINGS,
    SNAPSHOT_PICKS,
    TRANSFORM_PRESETS,
    default_spec,
)


def need_torch(command: str):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(f"{command} needs torch: pip install 'dgn-engine[export]'") from None


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line naming the option and pointing to --help (not usage + error)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def folder(text: str) -> str:
    """An argparse type: a folder's path (an empty one would mean the current folder by accident)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text


def integer(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi:,}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def shard(text: str) -> tuple[int, int]:
    """An argparse type: I/N, the I-th (from 0) of N shards."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected I/N, the I-th of N shards counted from 0 (e.g. 0/4), got {text!r}")
    index, count = int(parts[0]), int(parts[1])
    if count < 1 or index >= count:
        raise argparse.ArgumentTypeError(f"{text}: I counts from 0 to N-1 (the shards of 4 are 0/4 .. 3/4)")
    return index, count


def finite(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_classifier_options(p: argparse.ArgumentParser, default: str | None = "vgg16", scores: bool = False) -> None:
    g = p.add_argument_group("classifier D")
    if scores:
        g.add_argument(
            "--keep-softmax",
            action="store_true",
            help="optimise D's output as it is: by default a final Softmax, LogSoftmax or Sigmoid on D's output "
            "(Keras-made ONNX files and many deployed models carry one) is taken off and the search drives "
            "the scores before it, as the paper does; the results report both",
        )
    g.add_argument(
        "--classifier",
        default=default,
        metavar="NAME",
        help="vgg16 (the real VGG-16), demo (the embedded Fashion-MNIST demo), a TorchScript file (.pt), "
        "an ONNX file (.onnx), or module:factory (a Python function returning a torch module) (default: "
        + (default or "the embedded demo; vgg16 where --weights is given")
        + ")",
    )
    g.add_argument(
        "--weights",
        metavar="FILE",
        help="weights for D: a torch state dict (.pth/.pt, torchvision names for vgg16), a Keras-1 "
        "vgg16_weights.h5 (layer_k/param_p, BGR, Caffe mean), or 'random' (seeded by --seed)",
    )
    g.add_argument(
        "--image-size",
        type=integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
        metavar="PX",
        help="D's input size, where the file cannot tell",
    )
    g.add_argument(
        "--channels",
        choices=("RGB", "BGR", "L"),
        help="D's channel order (L = grayscale), where the file cannot tell (default: RGB)",
    )
    g.add_argument(
        "--mean",
        type=floats,
        metavar="M[,M,M]",
        help="per-channel mean on the 0..1 pixel scale: input = (pixel/255 - mean) / std (default: the "
        "weights' own, ImageNet's for vgg16 (Caffe's for .h5), else 0)",
    )
    g.add_argument(
        "--std",
        type=floats,
        metavar="S[,S,S]",
        help="per-channel std on the 0..1 pixel scale (default: the weights' own, ImageNet's for vgg16, else 1)",
    )


def ensure_writable_dir(path: str, what: str = "output folder") -> None:
    """Fail early where `path` cannot become a writable folder, without creating it: a command that
    stops on a later check leaves nothing behind."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"the {what} {path!r} is a file; give a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"cannot create the {what} {path!r}: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"the {what} {path!r} is not writable; choose another")


def THREADS(text: str) -> int:  # noqa: N802 (an argparse type, named as the others)
    """An argparse type: CPU threads, at most this machine's cores (more only slow every thread down)."""
    value = integer(1)(text)
    cores = os.cpu_count() or 1
    if value > cores:
        print(
            f"dgn-engine: warning: --threads {value} is more than the {cores} cores here; using {cores}",
            file=sys.stderr,
        )
        return cores
    return value


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def add_device_option(p) -> None:
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: CUDA where onnxruntime (torch, for the torch reference) can use it, else the CPU "
        "(default: %(default)s)",
    )


def add_method_options(p: argparse.ArgumentParser) -> None:
    # the defaults shown are the spec's own (the paper's Table 1 per mode), never copies
    pre, unt = default_spec("pretrained"), default_spec("untrained")
    small, pix = default_spec("untrained", image_size=32), default_spec("pixel")
    large, mac = default_spec("untrained", image_size=224), default_spec("maco")
    g = p.add_argument_group("generator G and method")
    g.add_argument(
        "--mode",
        choices=tuple(REGISTRY),
        help="pretrained: G is a trained decoder and only alpha (3,200 values at 224 px) is "
        "optimised (needs --decoder, except the demo, which ships one); untrained: all of G is optimised from "
        "a random start; pixel: no G, "
        "the classic baseline (the image itself, Fourier-parameterised with decorrelated colours, Adam, "
        "transforms on); maco: no G, magnitude-constrained optimisation (Fel et al. 2023: only the phase of "
        "an image whose Fourier magnitude is fixed to a natural-image spectrum is optimised) "
        "(default: the artifacts' mode; pretrained for the demo, which ships its decoder; untrained, which "
        "needs no decoder, for any other classifier)",
    )
    g.add_argument("--decoder", metavar="FILE", help="the pretrained G (made by dgn-engine train-decoder)")
    g.add_argument(
        "--spectrum",
        metavar="DIR",
        help="maco mode: a folder of photos whose mean Fourier magnitude the image keeps (default: a 1/f "
        "power law, natural images' average shape)",
    )
    g.add_argument(
        "--g-width",
        type=finite,
        metavar="X",
        help="untrained G: scale of the paper's layer widths (default: image size / 224, at most 1; at most "
        "0.1875 with --image-range sigmoid, the default from 224 px)",
    )
    g.add_argument(
        "--steps",
        metavar="N",
        type=integer(1, MAX_STEPS),
        help=f"steps per target (default: {pre.steps} pretrained, untrained {small.steps} below 224 px and "
        f"{large.steps} from 224 px ({unt.steps} with --paper), {pix.steps} pixel, {mac.steps} maco)",
    )
    g.add_argument(
        "--seed",
        metavar="N",
        type=integer(0, 2**63 - 1),
        default=pre.seed,
        help="seeds G's start and the noise (default: %(default)s)",
    )
    g.add_argument(
        "--lambda",
        metavar="X",
        dest="lam",
        type=finite,
        default=pre.lam,
        help="penalty on the classes a target does not name (default: %(default)s)",
    )
    g.add_argument(
        "--target-leak",
        metavar="X",
        type=finite,
        default=pre.target_leak,
        help="slope of a class target's term below zero: 1 lets a target whose logit starts "
        "negative rise; 0 is the paper's literal ReLU on the target as well, which leaves "
        "such a target stuck at 0 (default: %(default)s)",
    )
    g.add_argument(
        "--lr",
        metavar="X",
        type=finite,
        help=f"learning rate (default: {pre.optimizer.lr:g} {pre.optimizer.name} pretrained; "
        f"{unt.optimizer.name} untrained, {small.optimizer.lr:g} below 224 px and {large.optimizer.lr:g} from "
        f"224 px ({unt.optimizer.lr:g} with --paper); {pix.optimizer.lr:g} {pix.optimizer.name} pixel, "
        f"{mac.optimizer.lr:g} {mac.optimizer.name} maco)",
    )
    g.add_argument(
        "--momentum", type=finite, metavar="X", help=f"Nesterov momentum (default: {pre.optimizer.momentum:g})"
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help=f"default: {pre.optimizer.name} pretrained, {unt.optimizer.name} untrained (the paper's)",
    )
    g.add_argument(
        "--noise-sigma",
        metavar="SIGMA",
        help="feature noise: a number, or gaussian-dropout for the original code's "
        f"sqrt(0.05/0.95) = {GAUSSIAN_DROPOUT_SIGMA:.3f} (default: {pre.noise.sigma:g} {pre.noise.kind} "
        f"pretrained; {unt.noise.kind} untrained, {small.noise.sigma:g} below 224 px and {large.noise.sigma:g} "
        f"from 224 px ({unt.noise.sigma:g} with --paper); none in pixel and maco modes)",
    )
    g.add_argument(
        "--noise-schedule",
        choices=NOISE_SCHEDULES,
        help="constant: sigma throughout (the paper's); linear: sigma falls to 0 at the last step "
        f"(default: {unt.noise.schedule})",
    )
    g.add_argument(
        "--regularizer",
        choices=REGULARIZERS,
        help=f"default: {pre.regularizer.kind} (eq. 4, {pre.regularizer.weight:g} * ||alpha||_2) pretrained, "
        f"{unt.regularizer.kind} (eq. 3) untrained; l2sq-alpha is the original Keras code's sum of squares",
    )
    g.add_argument(
        "--reg-weight",
        metavar="X",
        type=finite,
        help=f"regulariser weight (default: {pre.regularizer.weight:g} pretrained, "
        f"{unt.regularizer.weight:g} untrained)",
    )
    g.add_argument(
        "--image-range",
        choices=IMAGE_RANGES,
        help="bounded: G's image is soft-clipped into the pixel range (unchanged inside 10..90%% of it, "
        "saturating outside), so the written PNG is the image D scored; free: the paper's unbounded G, "
        "whose image D may score far outside 0..255 and which is clipped when written; sigmoid: G's "
        "(linear) output is decorrelated colours squashed by a sigmoid, as pixel mode's image (fixed at "
        f"export; default: {pre.image_range}, sigmoid untrained from 224 px)",
    )
    g.add_argument(
        "--transforms",
        metavar="none|standard|jitter=J,scale=S,rotate=DEG",
        help="transformation robustness: each step D sees G's image shifted by up to J of its side, scaled "
        "by 1 +- S and rotated by up to DEG degrees, drawn per target and step from the seed; the image "
        f"written is G's own. standard = {TRANSFORM_PRESETS['standard'].numbers()}; "
        "none is the paper's literal method. On or none is fixed at export, the strengths are not "
        f"(default: {pre.transforms.text()} pretrained and untrained below 224 px, {large.transforms.text()} "
        "untrained from 224 px, pixel and maco)",
    )
    g.add_argument(
        "--paper",
        action="store_true",
        help="the paper's method to the letter: Table 1's settings for the mode (also for the demo), "
        "--target-leak 0, --image-range free, --transforms none; other options given still apply",
    )
    g.add_argument(
        "--snapshots",
        metavar="N",
        type=integer(1, MAX_STEPS),
        default=pre.snapshots.count,
        help="images taken over the run (default: %(default)s)",
    )
    g.add_argument(
        "--keep",
        metavar="N",
        type=integer(1, MAX_STEPS),
        default=pre.snapshots.keep,
        help="the final image is made from the last KEEP snapshots (default: %(default)s)",
    )
    g.add_argument(
        "--pick",
        choices=SNAPSHOT_PICKS,
        help="the image written: median = the per-pixel median of the kept snapshots (the original "
        "code's); best = of those snapshots and their median, the one D scores highest on the target "
        f"(default: {large.snapshots.pick} untrained from 224 px, else {pre.snapshots.pick})",
    )


def method_settings(args) -> dict:
    """The method's options that were given, as spec.with_settings takes them."""
    given = {name: getattr(args, name, None) for name in SETTINGS}
    return {k: v for k, v in given.items() if v is not None and v is not False}


def targets_of(args) -> tuple:
    """--target and --targets-file, parsed once."""
    from ..targets import parse_target

    texts = list(args.target) + (read_lines(args.targets_file, "targets file") if args.targets_file else [])
    return tuple(parse_target(t) for t in texts)


def choices_of(args, model, beside: str | None = None) -> dict:
    """D's and G's choices from the classifier and generator options, for a session.Request (`beside`:
    the classifier named beside an artifacts folder)."""
    from ..session import ClassifierChoice, GeneratorChoice

    labels = getattr(args, "labels", None)
    d = ClassifierChoice(
        model,
        args.weights,
        args.image_size,
        args.channels,
        args.mean,
        args.std,
        tuple(read_lines(labels, "labels file")) if labels else None,
        args.keep_softmax,
        beside,
    )
    return {"d": d, "g": GeneratorChoice(args.mode, args.decoder, args.g_width, args.spectrum)}
