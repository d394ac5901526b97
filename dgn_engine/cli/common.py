"""Options and helpers shared by several subcommands."""
from __future__ import annotations

import argparse
import os

from ..errors import UsageError


def need_torch(command: str):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(f"{command} needs torch: pip install 'dgn-engine[export]'") from None


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_classifier_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classifier D")
    g.add_argument("--classifier", default="vgg16", metavar="NAME",
                   help="vgg16 (the real VGG-16), a TorchScript file, or module:factory (a Python function "
                        "returning a torch module) (default: %(default)s)")
    g.add_argument("--weights", metavar="FILE",
                   help="weights for D: a torch state dict (.pth/.pt, torchvision names for vgg16), a Keras-1 "
                        "vgg16_weights.h5 (layer_k/param_p, BGR, Caffe mean), or 'random' (seeded by --seed)")
    g.add_argument("--image-size", type=int, metavar="PX", help="D's input size, where the file cannot tell")
    g.add_argument("--channels", choices=("RGB", "BGR", "L"),
                   help="D's channel order (L = grayscale), where the file cannot tell (default: RGB)")
    g.add_argument("--mean", type=floats, metavar="M[,M,M]",
                   help="per-channel mean on the 0..1 pixel scale: input = (pixel/255 - mean) / std")
    g.add_argument("--std", type=floats, metavar="S[,S,S]", help="per-channel std on the 0..1 pixel scale")


def classifier_from_args(args, seed: int = 0):
    from ..export.classifiers import load_classifier
    return load_classifier(args.classifier, args.weights, image_size=args.image_size, channels=args.channels,
                           mean=args.mean, std=args.std, seed=seed)


def ensure_writable_dir(path: str, what: str = "output folder") -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the {what} {path!r}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"the {what} {path!r} is not writable; choose another")


def read_lines(path: str, what: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror}") from None


def set_threads(n: int | None) -> None:
    if n:
        import torch
        torch.set_num_threads(n)
