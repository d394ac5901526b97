"""Train the embedded demo: the Fashion-MNIST classifier, then its decoder with train-decoder, then
write the model card and the prebuilt demo artifacts. Deterministic with its seed.

    apt-get install dataset-fashion-mnist
    python tools/train_demo.py            # writes dgn_engine/demo_data/
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dgn_engine import demo
from dgn_engine.cli.main import main as cli
from dgn_engine.exporter.autoencoder import load_decoder
from dgn_engine.exporter.classifiers import load_classifier
from dgn_engine.exporter.manifest import export_demo
from dgn_engine.exporter.vgg import vgg_style
from dgn_engine.exporter.weights import sha256_file

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(name: str) -> np.ndarray:
    with gzip.open(os.path.join(DATA, name)) as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def load_split(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], y  # 28 -> 32 px, black border


def to_model(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(demo.PREPROCESSING.to_model(pixels))


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_model(x[i : i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def train_classifier(x, y, epochs: int, seed: int, log) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = vgg_style(1, 32, demo.CLASSES, demo.CONVS, demo.HIDDEN)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return fit(model, x, y, epochs, seed, 1e-3, "classifier", log)


def fit(model, x, y, epochs: int, seed: int, lr: float, name: str, log) -> torch.nn.Module:
    """Adam with a cosine schedule, batches of 128, random left-right flips (clothes are symmetric)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(x) // 128))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen).numpy()
        total, seen = 0.0, 0
        for i in range(0, len(order) - 127, 128):
            idx = np.sort(order[i : i + 128])
            batch = to_model(x[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = F.cross_entropy(model(batch), torch.from_numpy(y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}")
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8, help="classifier epochs (default: %(default)s)")
    p.add_argument("--decoder-epochs", type=int, default=10, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="fixed, for bit-reproducible training")
    p.add_argument("--skip-classifier", action="store_true", help="keep the committed classifier")
    p.add_argument("--artifacts-only", action="store_true", help="only export the shipped demo artifacts")
    args = p.parse_args()
    if args.artifacts_only:
        write_artifacts()
        return 0
    torch.set_num_threads(args.threads)
    started = time.time()
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    card = {"seed": args.seed, "threads": args.threads}
    with open(demo.path("labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(LABELS) + "\n")
    if not args.skip_classifier:
        model = train_classifier(x_train, y_train, args.epochs, args.seed, print)
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, demo.classifier_weights())
    clf = load_classifier(demo.NAME)
    card.update(
        classifier_epochs=args.epochs,
        test_accuracy=accuracy(clf.module, x_test, y_test),
        train_accuracy=accuracy(clf.module, x_train[:10000], y_train[:10000]),
        classifier_parameters=sum(p.numel() for p in clf.module.parameters()),
    )
    print(f"classifier: test accuracy {card['test_accuracy']:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        for i, img in enumerate(x_train):
            Image.fromarray(img[..., 0]).save(os.path.join(tmp, f"{i:05d}.png"))
        ckpt = demo.decoder_weights() + ".ckpt"
        if os.path.exists(ckpt):
            os.unlink(ckpt)
        rc = cli(
            [
                "train-decoder",
                "--images",
                tmp,
                "--out",
                demo.decoder_weights(),
                "--classifier",
                demo.NAME,
                "--epochs",
                str(args.decoder_epochs),
                "--width",
                str(demo.G_WIDTH),
                "--heldout",
                "0.1",
                "--seed",
                str(args.seed),
                "--threads",
                str(args.threads),
            ]
        )
        if rc:
            return rc
        os.unlink(ckpt)
    plan, _, training = load_decoder(demo.decoder_weights())
    card.update(
        decoder_epochs=training["epochs"],
        decoder_heldout_mse=training["history"][-1]["val_mse"],
        decoder_train_mse=training["history"][-1]["train_mse"],
        decoder_features=plan.features,
        decoder_heldout_images=training["heldout_images"],
        decoder_train_images=training["train_images"],
    )
    card["seconds"] = round(time.time() - started, 1)
    card["classifier_sha256"] = sha256_file(demo.classifier_weights())
    card["decoder_sha256"] = sha256_file(demo.decoder_weights())
    with open(demo.path("training.json"), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
    write_card(card)
    print(json.dumps(card, indent=2))
    write_artifacts()
    return 0


CARD = """# The embedded demo models

Made by `python tools/train_demo.py` (seed {seed}, {threads} threads, deterministic), in {seconds:.0f} s on
a 2-core CPU. Numbers below are in `training.json`.

## Classifier D (`classifier.pt`)
- Architecture: VGG-style, 8 conv 3x3 layers (16, 16, pool, 32, 32, pool, 64, 64, pool, 128, 128,
  pool), then dense 128 and 10 outputs; {classifier_parameters:,} parameters. Input 32x32 grayscale:
  Fashion-MNIST's 28x28 images padded by 2 black pixels; input = (pixel/255 - 0.2860) / 0.3530.
- Data: Fashion-MNIST (Debian's `dataset-fashion-mnist`, Zalando's article images, MIT licence), the
  60,000 training images; random horizontal flips. Why this set: it is real, labelled, offline, small
  enough to train on a laptop CPU in minutes, and its classes (clothes, shoes, bags) are shapes a
  person recognises in a generated image.
- Training: {classifier_epochs} epochs, Adam lr 1e-3 with cosine decay, batch 128, cross-entropy.
- Test accuracy on the 10,000 held-out test images: **{test_accuracy:.2%}** (training subset:
  {train_accuracy:.2%}).

## Decoder G (`decoder.pt`)
- The paper's denoising autoencoder at 32 px with the paper's widths scaled by {width}, trained with
  `dgn-engine train-decoder --classifier demo --width {width} --epochs {decoder_epochs} --heldout 0.1` on the
  Fashion-MNIST training images written as PNG files: Gaussian input noise (sigma 0.1 on the 0..1
  pixel scale), MSE, Adadelta, batch 24. Feature vector: {decoder_features} values.
- Reconstruction error (MSE in the classifier's input space) on the {decoder_heldout_images:,} held-out
  images: **{decoder_heldout_mse:.4f}** (training images: {decoder_train_mse:.4f}); the input space has
  unit variance, so this is the unexplained fraction of the pixel variance.

## Artifacts (`artifacts/pretrained`, `artifacts/untrained`)
The demo exported with batch {batch} and the taps {taps}; a test checks that they equal a fresh export.
Run defaults: the paper's in pretrained mode (1,200 steps, Nesterov lr 0.01, noise 0.05). In untrained
mode the paper's noise sigma 2 and AdaMax lr 0.002 are made for a 5.2M-value G at 224 px; on this
28k-value G they reach top-1 for 1 of 10 classes, so the demo uses sigma 0.5, lr 0.01 and 1,000 steps
(10 of 10). `--noise-sigma 2 --lr 0.002 --steps 500` restores the paper's.
"""


def write_card(card: dict) -> None:
    with open(demo.path("MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(
            CARD.format(
                **card, width=demo.G_WIDTH, batch=demo.BATCH, taps=", ".join(demo.TAPS), threads=card.get("threads", 2)
            )
        )


def write_artifacts() -> None:
    for mode in ("pretrained", "untrained"):
        out = demo.shipped_artifacts(mode)
        if os.path.isdir(out):
            shutil.rmtree(out)
        export_demo(mode, out)


if __name__ == "__main__":
    sys.exit(main())
