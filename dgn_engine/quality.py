"""Are the preferred inputs recognised? For a classifier D and judge classifiers that never saw the
search, per mode and transforms setting: the share of class targets whose written PNG is D's top-1,
D's mean probability of the target on it (softmax of D's logits), each judge's top-1 and top-5
share, and D's seconds of compute per target. Needs torch (the judges are torch classifiers).

The PNGs are read back as written; a judge of another input size sees them resized (bilinear).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .errors import UsageError

COLUMNS = ("d_top1", "d_probability", "seconds_per_target")


def sample_classes(n_classes: int, count: int) -> list[int]:
    """`count` classes spread evenly over D's (all of them where it has no more)."""
    if count >= n_classes:
        return list(range(n_classes))
    return sorted({int(round(c)) for c in np.linspace(0, n_classes - 1, count)})


def _model_input(path: str, pp) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("L" if pp.channels == 1 else "RGB")
        if img.size != (pp.image_size, pp.image_size):
            img = img.resize((pp.image_size, pp.image_size), Image.BILINEAR)
        pixels = np.asarray(img)
    return pp.to_model(pixels[..., None] if pp.channels == 1 else pixels)


def logits(clf, paths: list[str], batch: int = 16) -> np.ndarray:
    """The classifier's logits [N, classes] on the PNGs (its scores before a final softmax), float64."""
    import torch

    rows = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = np.stack([_model_input(p, clf.preprocessing) for p in paths[i : i + batch]])
            rows.append(clf.scores(torch.from_numpy(x)).double().numpy())
    return np.concatenate(rows)


def judge(paths: list[str], classes: list[int], d, judges: dict) -> dict:
    """One row of shares for the PNGs of these class targets."""
    classes = np.asarray(classes)
    out = logits(d, paths)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    row = {
        "d_top1": float((out.argmax(1) == classes).mean()),
        "d_probability": float(p[np.arange(len(classes)), classes].mean()),
    }
    for name, clf in judges.items():
        order = np.argsort(-logits(clf, paths), axis=1)
        row[f"{name}_top1"] = float((order[:, 0] == classes).mean())
        row[f"{name}_top5"] = float((order[:, :5] == classes[:, None]).any(1).mean())
    return row


def load_judges(names: list[str], d) -> dict:
    """Judges by name or file (as --classifier takes them), each checked to have D's classes."""
    from .exporter.classifiers import load_classifier

    judges, n_d = {}, logits_count(d)
    for name in names:
        clf = load_classifier(name)
        n = logits_count(clf)
        if n != n_d:
            raise UsageError(f"judge {name!r} has {n} classes, D has {n_d}: a judge must share D's")
        if clf.preprocessing.channels != d.preprocessing.channels:
            raise UsageError(f"judge {name!r} takes {clf.preprocessing.order} images, D makes {d.preprocessing.order}")
        judges[os.path.basename(name).split(":")[-1]] = clf
    return judges


def quality(
    model="demo",
    judges=(),
    modes=("untrained", "pretrained", "pixel", "maco"),
    transforms=("default",),
    classes: int = 10,
    steps: int | None = None,
    seeds=(0,),
    out: str | None = None,
    decoder: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    progress: bool = False,
    spectrum: str | None = None,
    log=print,
) -> list[dict]:
    """One row per mode and transforms setting ("default": the mode's own); with several seeds each
    share is over all their targets. `out` keeps the runs (one folder per mode, transforms and seed)."""
    import tempfile

    from . import api, demo
    from .exporter.classifiers import load_classifier

    d = load_classifier(model, weights)
    if not judges and d.name == demo.NAME:
        judges = [f"dgn_engine.exporter.demo_judges:{j}" for j in ("resnet", "mlp")]
    loaded = load_judges(list(judges), d)
    n_classes = logits_count(d)
    chosen = sample_classes(n_classes, classes)
    out = out or tempfile.mkdtemp(prefix="dgn-quality-")
    rows = []
    for mode in modes:
        for tr in transforms:
            per_seed, seconds = [], []
            for seed in seeds:
                folder = os.path.join(out, f"{mode}-{tr}-seed{seed}")
                settings = {} if tr == "default" else {"transforms": tr}
                results = api.synthesize(
                    model,
                    [f"class:{c}" for c in chosen],
                    mode=mode,
                    steps=steps,
                    seed=seed,
                    out=folder,
                    weights=weights,
                    decoder=decoder if mode == "pretrained" else None,
                    spectrum=spectrum if mode == "maco" else None,
                    device=device,
                    progress=progress,
                    **settings,
                )
                per_seed.append(judge([r.path for r in results], chosen, d, loaded))
                seconds += [r.seconds for r in results]
            spec = api.mode_spec(d, mode)
            row = {
                "mode": mode,
                "transforms": spec.transforms.text() if tr == "default" else tr,
                "steps": steps or spec.steps,
                "seeds": len(seeds),
                "targets": len(chosen) * len(seeds),
                **{k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]},
                "seconds_per_target": float(np.mean(seconds)),
            }
            rows.append(row)
            log(table([row], header=not rows[:-1]))
    return rows


def logits_count(clf) -> int:
    import torch

    pp = clf.preprocessing
    with torch.no_grad():
        return int(clf.module(torch.zeros(1, pp.channels, pp.image_size, pp.image_size)).shape[-1])


def judge_names(row: dict) -> list[str]:
    return [k[: -len("_top1")] for k in row if k.endswith("_top1") and k != "d_top1"]


def table(rows: list[dict], header: bool = True) -> str:
    names = judge_names(rows[0])
    head = f"{'mode':10s} {'transforms':26s} {'steps':>5s} {'targets':>7s} {'D top-1':>7s} {'D p':>5s}"
    head += "".join(f" {j + ' top-1/5':>16s}" for j in names) + f" {'s/target':>8s}"
    lines = [head] if header else []
    for r in rows:
        line = f"{r['mode']:10s} {r['transforms']:26s} {r['steps']:5d} {r['targets']:7d} {r['d_top1']:7.0%}"
        line += f" {r['d_probability']:5.2f}"
        line += "".join(f" {r[j + '_top1']:8.0%} / {r[j + '_top5']:4.0%}" for j in names)
        lines.append(line + f" {r['seconds_per_target']:8.2f}")
    return "\n".join(lines)
