"""Train the demo's two judges (dgn_engine/exporter/demo_judges.py): a small ResNet and an MLP on
Fashion-MNIST, other architectures and seeds than the demo's D, so that they judge its preferred
inputs without having seen the search. Deterministic with its seeds and thread count.

    apt-get install dataset-fashion-mnist
    python tools/train_judges.py          # writes dgn_engine/demo_data/judge-*.pt and judges.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_demo import accuracy, fit, load_split  # noqa: E402

from dgn_engine import demo  # noqa: E402
from dgn_engine.exporter.demo_judges import ARCHITECTURES, weights_file  # noqa: E402

SEEDS = {"resnet": 1, "mlp": 2}  # the demo's D used seed 0
EPOCHS = {"resnet": 4, "mlp": 8}


def train(name: str, x, y, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return fit(ARCHITECTURES[name](), x, y, epochs, seed, 2e-3, name, lambda m: print(m, flush=True))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="fixed, for bit-reproducible training")
    p.add_argument("--only", choices=list(ARCHITECTURES), help="train one judge")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    card_file = demo.path("judges.json")
    card = json.load(open(card_file)) if os.path.exists(card_file) else {}
    for name in [args.only] if args.only else list(ARCHITECTURES):
        started = time.time()
        model = train(name, x_train, y_train, EPOCHS[name], SEEDS[name])
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, weights_file(name))
        card[name] = {
            "architecture": type(model).__name__ if name != "mlp" else "MLP 1024-512-256-10",
            "seed": SEEDS[name],
            "epochs": EPOCHS[name],
            "threads": args.threads,
            "parameters": sum(p.numel() for p in model.parameters()),
            "test_accuracy": accuracy(model, x_test, y_test),
            "seconds": round(time.time() - started, 1),
        }
        print(f"{name}: test accuracy {card[name]['test_accuracy']:.4f}", flush=True)
    with open(card_file, "w") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
