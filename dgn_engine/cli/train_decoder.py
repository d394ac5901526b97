"""dgn-engine train-decoder: pretrain G as the decoder of a denoising autoencoder."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .common import THREADS, add_classifier_options, ensure_writable_dir, finite, integer, need_torch, set_threads

HELP = "train the denoising autoencoder whose decoder is the pretrained G"
DESCRIPTION = """\
Trains the paper's denoising autoencoder (Gaussian noise on the input, MSE, Adadelta, batch 24) on
a folder of images, in the input space of the classifier it will be coupled to (its size, channel
order and normalisation: give the same classifier options as to `run`). Writes the decoder to OUT
after every epoch, with a checkpoint OUT.ckpt: running the same command again resumes."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-decoder", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", required=True, metavar="DIR", help="training images (PNG/JPEG, searched recursively)")
    p.add_argument("--out", required=True, metavar="FILE", help="the decoder file to write, e.g. decoder.pt")
    p.add_argument("--epochs", type=integer(1, 100_000), default=400, help="(default: %(default)s, the original's)")
    p.add_argument("--batch", type=integer(2, 65_536), default=24, help="(default: %(default)s)")
    p.add_argument(
        "--noise-sigma", type=finite, default=0.1, help="input noise std on the 0..1 pixel scale (default: %(default)s)"
    )
    p.add_argument(
        "--width", type=finite, help="scale of the layer widths (default: 1 at 224 px, image size / 224 below)"
    )
    p.add_argument(
        "--heldout",
        type=finite,
        default=0.1,
        help="fraction of images kept out of training to measure reconstruction (default: %(default)s)",
    )
    p.add_argument("--seed", type=integer(0, 2**63 - 1), default=0, help="(default: %(default)s)")
    p.add_argument("--threads", type=THREADS, help="CPU threads (default: all cores)")
    add_classifier_options(p)
    p.set_defaults(func=main)


def main(args) -> int:
    need_torch("train-decoder")
    from ..exporter.autoencoder import load_images, train_decoder
    from ..exporter.classifiers import resolve_preprocessing

    if not 0 <= args.heldout < 1:
        raise UsageError("--heldout must lie in [0, 1)")
    if args.noise_sigma < 0 or (args.width is not None and args.width <= 0):
        raise UsageError("--noise-sigma must be >= 0 and --width > 0")
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} is a folder; give the decoder's file name, e.g. {args.out}/decoder.pt")
    ensure_writable_dir(os.path.dirname(os.path.abspath(args.out)), "folder of --out")
    set_threads(args.threads)
    pp = resolve_preprocessing(
        args.classifier, args.weights, image_size=args.image_size, channels=args.channels, mean=args.mean, std=args.std
    )
    images = load_images(args.images, pp)
    heldout = round(len(images) * args.heldout)
    if args.heldout > 0 and (heldout < 1 or heldout == len(images)):
        raise UsageError(
            f"--images {args.images!r} holds {len(images)} image(s): --heldout {args.heldout} leaves "
            f"{'none' if heldout < 1 else 'none to train on'} to measure the reconstruction on; give "
            f"more images (at least {int(1.5 / args.heldout) + 1}), or --heldout 0 to train on all "
            "without a measure"
        )
    if len(images) - heldout < 2:
        raise UsageError(
            f"--images {args.images!r} leaves {len(images) - heldout} image(s) to train on; the "
            "autoencoder's BatchNorm needs batches of at least 2: give more images"
        )
    width = args.width if args.width else min(1.0, pp.image_size / 224)
    result = train_decoder(
        images,
        pp,
        args.out,
        epochs=args.epochs,
        batch=args.batch,
        width=width,
        noise_sigma=args.noise_sigma,
        val_fraction=args.heldout,
        seed=args.seed,
    )
    last = result["history"][-1] if result["history"] else {}
    measured = f"held-out MSE {last['val_mse']:.5f}" if last.get("val_mse") is not None else "no held-out images"
    print(f"decoder written to {args.out!r} after {result['epochs']} epochs ({measured})")
    return 0
