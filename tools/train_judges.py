"""Train the demo's two judges (dgn_engine/export/demo_judges.py): a small ResNet and an MLP on
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

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_demo import accuracy, load_split, to_model  # noqa: E402

from dgn_engine import demo  # noqa: E402
from dgn_engine.export.demo_judges import ARCHITECTURES, weights_file  # noqa: E402

SEEDS = {"resnet": 1, "mlp": 2}  # the demo's D used seed 0
EPOCHS = {"resnet": 4, "mlp": 8}


def train(name: str, x, y, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ARCHITECTURES[name]()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
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
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}", flush=True)
    return model.eval()


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
