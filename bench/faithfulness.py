"""Does the written PNG still drive its class, for D and for a classifier that never saw the search?

Trains two zoo architectures (DenseNet- and ViT-shaped, 32 px) for a few seconds each on gratings of
10 orientations (made here, nothing downloaded), runs every class in untrained mode through the torch
reference with each image range, and prints, per range: D's top-1 on the PNG, on the median image
before it became pixels and on the last step; and the other net's top-1 on the PNG.

    python bench/faithfulness.py [--out DIR] [--ranges bounded,free] [--steps N]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dgn_engine.cli.main import main as cli  # noqa: E402
from dgn_engine.engine.outputs import read_png  # noqa: E402
from tests import zoo  # noqa: E402

SIZE, CLASSES = 32, 10


def gratings(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 32, 32, 3] sinusoidal gratings, class c at c * 18 degrees; random phase, frequency,
    colours and noise."""
    labels = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    theta = labels * np.pi / CLASSES + rng.normal(0, 0.04, n)
    freq = rng.uniform(2.5, 5.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    wave = np.sin(
        2 * np.pi * freq[:, None, None] * (np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy)
        + phase[:, None, None]
    )
    a, b = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
    t = (wave[..., None] + 1) / 2
    img = a[:, None, None] * t + b[:, None, None] * (1 - t) + rng.normal(0, 0.05, (n, SIZE, SIZE, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), labels


def train(factory: str, seconds: float, seed: int) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    net = getattr(zoo, factory)()
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    net.train()
    started = time.time()
    while time.time() - started < seconds:
        x, y = gratings(64, rng)
        loss = F.cross_entropy(net(torch.from_numpy(net.preprocessing.to_model(x))), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = gratings(1000, np.random.default_rng(seed + 100))
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(net.preprocessing.to_model(x))).argmax(1).numpy() == y).mean())
    return net, accuracy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="faithfulness-bench")
    p.add_argument("--ranges", default="bounded,free")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seconds", type=float, default=20.0, help="training time of each net")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    d, d_acc = train("densenet", args.seconds, 0)
    other, other_acc = train("vit", args.seconds, 1)
    weights = os.path.join(args.out, "densenet-gratings.pt")
    torch.save(d.state_dict(), weights)
    print(f"D: densenet, held-out accuracy {d_acc:.1%}; other: vit, {other_acc:.1%} ({args.seconds:.0f} s each)")
    for image_range in args.ranges.split(","):
        out = os.path.join(args.out, image_range)
        started = time.time()
        assert (
            cli(
                [
                    "run",
                    "--backend",
                    "torch",
                    "--classifier",
                    "tests.zoo:densenet",
                    "--weights",
                    weights,
                    "--mode",
                    "untrained",
                    "--all-classes",
                    "--steps",
                    str(args.steps),
                    "--image-range",
                    image_range,
                    "--out",
                    out,
                    "--quiet",
                ]
            )
            == 0
        )
        records = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "targets", "*.json")))]
        hits = {v: sum(r["faithfulness"][v]["top1_is_target"] for r in records) for v in ("last_step", "median", "png")}
        pngs = np.stack([read_png(os.path.join(out, "targets", r["id"] + ".png"), 3) for r in records])
        with torch.no_grad():
            seen = other(torch.from_numpy(other.preprocessing.to_model(pngs))).argmax(1).numpy()
        classes = [int(r["target"].split(":")[1]) for r in records]
        other_hits = int((seen == np.array(classes)).sum())
        median = lambda v: float(np.median([r["faithfulness"][v]["activation"] for r in records]))  # noqa: E731, B023 (used in this iteration)
        print(
            f"{image_range:8s} D top-1 on PNG {hits['png']}/{len(records)}, median image {hits['median']}, last step "
            f"{hits['last_step']}; other net on PNG {other_hits}/{len(records)}; D's activation (median over "
            f"classes) last step {median('last_step'):.2f}, PNG {median('png'):.2f}; {time.time() - started:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
