"""Are the preferred inputs recognised? For the demo's D and judges that never saw the search, per mode:
the share of class targets whose written PNG is D's top-1, D's mean probability of the target on it
(softmax of D's logits), each judge's top-1 and top-5 share, and D's seconds of compute per target.

    python bench/quality.py [--modes untrained,pretrained] [--transforms none,standard] [--steps N]
                            [--out DIR] [--json FILE]

D is the embedded demo (a VGG-style Fashion-MNIST net); the judges are dgn_engine.export.demo_judges'
ResNet and MLP (other architectures, other seeds). Steps default to each mode's (the paper's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dgn_engine import demo  # noqa: E402
from dgn_engine.cli.main import main as cli  # noqa: E402
from dgn_engine.engine.outputs import read_png  # noqa: E402
from dgn_engine.export.classifiers import load_classifier  # noqa: E402
from dgn_engine.export.demo_judges import JUDGES  # noqa: E402
from dgn_engine.spec import parse_transforms  # noqa: E402


def _logits(module, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(demo.PREPROCESSING.to_model(pixels))).double().numpy()


def judge_folder(out: str, judges: dict) -> dict:
    """The quality row of one results folder (its class targets only)."""
    records = []
    for f in sorted(os.listdir(os.path.join(out, "targets"))):
        if f.endswith(".json") and not f.startswith("."):
            rec = json.load(open(os.path.join(out, "targets", f)))
            if rec["target"].startswith("class:") and "+" not in rec["target"]:
                records.append(rec)
    classes = np.array([int(r["target"].split(":")[1]) for r in records])
    pixels = np.stack([read_png(os.path.join(out, "targets", r["id"] + ".png"), 1) for r in records])
    d = load_classifier(demo.NAME).module.eval()
    logits = _logits(d, pixels)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    row = {
        "targets": len(records),
        "d_top1": float((logits.argmax(1) == classes).mean()),
        "d_probability": float(p[np.arange(len(classes)), classes].mean()),
        "seconds_per_target": float(np.mean([r["seconds"] for r in records])),
    }
    for name, module in judges.items():
        order = np.argsort(-_logits(module, pixels), axis=1)
        row[f"{name}_top1"] = float((order[:, 0] == classes).mean())
        row[f"{name}_top5"] = float((order[:, :5] == classes[:, None]).any(1).mean())
    return row


def quality(modes, steps: int | None, out: str, transforms=("default",)) -> list[dict]:
    judges = {name: load_classifier(f"dgn_engine.export.demo_judges:{name}").module.eval() for name in JUDGES}
    rows = []
    for mode in modes:
        for tr in transforms:
            folder = os.path.join(out, f"{mode}-{tr}")
            argv = ["run", "--all-classes", "--mode", mode, "--out", folder, "--quiet", "--device", "cpu"]
            argv += ["--steps", str(steps)] if steps else []
            argv += ["--transforms", tr] if tr != "default" else []
            if cli(argv) != 0:
                raise SystemExit(f"the {mode} run failed")
            given = parse_transforms(tr) if tr != "default" else demo.spec(mode).transforms
            row = {"mode": mode, "transforms": given.text(), "steps": steps or demo.spec(mode).steps}
            rows.append({**row, **judge_folder(folder, judges)})
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'mode':11s} {'transforms':10s} {'steps':>5s} {'D top-1':>7s} {'D p':>5s}"
    head += "".join(f" {j + ' top-1/5':>14s}" for j in JUDGES) + f" {'s/target':>8s}"
    lines = [head]
    for r in rows:
        line = f"{r['mode']:11s} {r['transforms']:10s} {r['steps']:5d} {r['d_top1']:7.0%} {r['d_probability']:5.2f}"
        line += "".join(f" {r[j + '_top1']:6.0%} / {r[j + '_top5']:4.0%}" for j in JUDGES)
        lines.append(line + f" {r['seconds_per_target']:8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="untrained,pretrained")
    p.add_argument("--steps", type=int, help="steps per target (default: each mode's)")
    p.add_argument("--out", help="where the runs' results stay (default: a temporary folder)")
    p.add_argument("--json", help="also write the rows as JSON")
    p.add_argument(
        "--transforms", default="default", help="comma list: none, standard, default (the demo's; default: default)"
    )
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="dgn-quality-")
    rows = quality(args.modes.split(","), args.steps, out, args.transforms.split(","))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
