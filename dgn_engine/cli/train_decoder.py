"""dgn-engine train-decoder: pretrain G as the decoder of a denoising autoencoder."""
from __future__ import annotations

import argparse

from ..errors import UsageError
from .common import add_classifier_options, need_torch, set_threads

HELP = "train the denoising autoencoder whose decoder is the pretrained G"
DESCRIPTION = """\
Trains the paper's denoising autoencoder (Gaussian noise on the input, MSE, Adadelta, batch 24) on
a folder of images, in the input space of the classifier it will be coupled to (its size, channel
order and normalisation: give the same classifier options as to `run`). Writes the decoder to OUT
after every epoch, with a checkpoint OUT.ckpt: running the same command again resumes."""


def add_parser(sub) -> None:
    p = sub.add_parser("train-decoder", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, metavar="DIR", help="training images (PNG/JPEG, searched recursively)")
    p.add_argument("--out", required=True, metavar="FILE", help="the decoder file to write, e.g. decoder.pt")
    p.add_argument("--epochs", type=int, default=400, help="(default: %(default)s, the original's)")
    p.add_argument("--batch", type=int, default=24, help="(default: %(default)s)")
    p.add_argument("--noise-sigma", type=float, default=0.1,
                   help="input noise std on the 0..1 pixel scale (default: %(default)s)")
    p.add_argument("--width", type=float,
                   help="scale of the layer widths (default: 1 at 224 px, image size / 224 below)")
    p.add_argument("--heldout", type=float, default=0.1,
                   help="fraction of images kept out of training to measure reconstruction (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    add_classifier_options(p)
    p.set_defaults(func=main)


def main(args) -> int:
    need_torch("train-decoder")
    from ..export.autoencoder import load_images, train_decoder
    from ..export.classifiers import resolve_preprocessing

    if args.epochs < 1 or args.batch < 2:
        raise UsageError("--epochs must be >= 1 and --batch >= 2")
    if not 0 <= args.heldout < 1:
        raise UsageError("--heldout must lie in [0, 1)")
    set_threads(args.threads)
    pp = resolve_preprocessing(args.classifier, args.weights, image_size=args.image_size,
                               channels=args.channels, mean=args.mean, std=args.std)
    images = load_images(args.images, pp)
    width = args.width if args.width else min(1.0, pp.image_size / 224)
    result = train_decoder(images, pp, args.out, epochs=args.epochs, batch=args.batch, width=width,
                           noise_sigma=args.noise_sigma, val_fraction=args.heldout, seed=args.seed)
    last = result["history"][-1] if result["history"] else {}
    print(f"decoder written to {args.out!r} after {result['epochs']} epochs "
          f"(held-out MSE {last.get('val_mse', float('nan')):.5f})")
    return 0
