"""A batch's outcomes as the files a results folder holds: each target's PNG and its JSON record,
with D's top-5 on the PNG itself. Made where the batch ran (a Ray worker too), written by the job."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..generators import generator
from ..preprocessing import display_contrast, display_original
from ..spec import RunSpec
from ..targets import OUTPUT, PROBABILITY, Target, objective_weights, weighted_activation
from .backends.protocol import Backend
from .loop import Outcome
from .outputs import decode_png, png_bytes

TOP_K = 5


@dataclass(frozen=True)
class ResultSettings:
    """What a target's files depend on besides its outcome (small: it travels to workers)."""

    spec: RunSpec
    display: str  # model: the picture D saw; contrast: it stretched to 0..255; original: min-max (+ sqrt untrained)
    labels: list[str] | None
    made_by: dict
    key: str


@dataclass
class TargetFiles:
    target: Target
    png: bytes
    record: dict


def target_files(backend: Backend, settings: ResultSettings, outcomes: list[Outcome]) -> list[TargetFiles]:
    """The PNG of each outcome and its record; the top-5 is D's on the PNG's bytes, decoded as a person's
    viewer would, so the scores reported are those of the file written."""
    pp, spec = backend.preprocessing, settings.spec
    ok = [o for o in outcomes if o.image is not None]
    png = {}
    for o in ok:
        if settings.display == "original":
            pixels = display_original(o.image, pp.order, generator(spec.mode).sqrt_original)
        elif settings.display == "contrast":
            pixels = display_contrast(pp.to_pixels(o.image))
        else:
            pixels = pp.to_pixels(o.image)
        png[id(o)] = png_bytes(pixels)
    seen = {}
    if ok:
        readback = np.stack([pp.to_model(decode_png(png[id(o)], pp.channels)) for o in ok])
        seen = _split(backend.classify(readback), ok)
        if settings.display != "model":
            true = np.stack([pp.to_model(pp.to_pixels(o.image)) for o in ok])
            seen_true = _split(backend.classify(true), ok)
        # what the search saw last and the median before it became pixels: where the target is lost
        seen_median = _split(backend.classify(np.stack([o.image for o in ok])), ok)
        seen_last = _split(backend.classify(np.stack([o.last_image for o in ok])), ok)
    files = []
    for o in outcomes:
        record = {
            "target": o.target.text,
            "id": o.target.id,
            "name": _target_name(settings, o.target),
            "results_key": settings.key,
            **settings.made_by,
            "mode": spec.mode,
            "seed": spec.seed,
            "steps": spec.steps,
            "backend": backend.name,
            "loss_curve": o.curve,
            "last_step_activation": o.last_activation,  # NaN where diverged: written as null
            "seconds": round(o.seconds, 3),
            "diverged": o.diverged,
        }
        if o.image is not None:
            record.update(_report(settings, o.target, seen[id(o)]))
            record["faithfulness"] = {
                view: _brief(settings, o.target, acts[id(o)])
                for view, acts in (("last_step", seen_last), (spec.snapshots.pick, seen_median), ("png", seen))
            }
            if settings.display != "model":
                record["model_view"] = _report(settings, o.target, seen_true[id(o)])
        else:
            png[id(o)] = png_bytes(np.zeros((8, 8, pp.channels), np.uint8))
        record["png_sha256"] = hashlib.sha256(png[id(o)]).hexdigest()
        files.append(TargetFiles(o.target, png[id(o)], record))
    return files


def relabelled(record: dict, settings: ResultSettings, target: Target) -> dict:
    """The record with its class names from `settings.labels` (names are the only thing labels change)."""
    new = dict(record, name=_target_name(settings, target))
    for view in ("top5",):
        if view in new:
            new[view] = [dict(t, name=_class_name(settings, t["class"])) for t in new[view]]
    if "model_view" in new:
        mv = new["model_view"]
        new["model_view"] = dict(mv, top5=[dict(t, name=_class_name(settings, t["class"])) for t in mv["top5"]])
    return new


def _class_name(settings: ResultSettings, c: int) -> str:
    labels = settings.labels
    return labels[c] if labels and c < len(labels) else str(c)


def _target_name(settings: ResultSettings, target: Target) -> str:
    """The class name for a plain class target, else the target's text."""
    t = target.terms
    if len(t) == 1 and t[0].kind == "class" and t[0].weight == 1.0 and settings.labels:
        return _class_name(settings, t[0].index)
    return target.text


def _split(acts: dict[str, np.ndarray], outcomes: list[Outcome]) -> dict[int, dict[str, np.ndarray]]:
    return {id(o): {n: a[i] for n, a in acts.items()} for i, o in enumerate(outcomes)}


def _brief(settings: ResultSettings, target: Target, acts: dict[str, np.ndarray]) -> dict:
    report = _report(settings, target, acts)
    return {
        "activation": report["final_activation"],
        "top1": report["top5"][0]["class"],
        "top1_is_target": report["top1_is_target"],
    }


def _report(settings: ResultSettings, target: Target, acts: dict[str, np.ndarray]) -> dict:
    """The target's activation and D's top-5 by score; where D's scores precede its final softmax, each
    with D's probability beside it (the target's: the same weighted sum over its classes)."""
    p = acts.get(PROBABILITY)
    acts = {n: a for n, a in acts.items() if n != PROBABILITY}
    weights, _ = objective_weights([target], {n: a.shape for n, a in acts.items()}, settings.spec.lam)
    activation = float(weighted_activation(weights, {n: a[None] for n, a in acts.items()})[0])
    scores = acts[OUTPUT]
    order = np.argsort(-scores, kind="stable")[:TOP_K]
    classes = {t.index for t in target.terms if t.kind == "class"}
    top5 = [{"class": int(c), "name": _class_name(settings, int(c)), "score": float(scores[c])} for c in order]
    report = {
        "final_activation": activation,
        "top5": top5,
        "top1_is_target": bool(classes) and int(order[0]) in classes,
    }
    if p is not None:
        for entry in top5:
            entry["probability"] = float(p[entry["class"]])
        only_classes = all(t.kind == "class" for t in target.terms)
        report["final_probability"] = float((weights[OUTPUT][0] * p).sum()) if only_classes else None
    return report
