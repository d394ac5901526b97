"""Results as Python objects (no torch): what `dgn.synthesize` and `dgn.Engine.run` return, read back
from the files a run wrote, so that the image in hand is the PNG whose scores it reports."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .errors import UsageError
from .files import Folder
from .records import read_result
from .targets import Target, parse_target


@dataclass
class Result:
    """One target's preferred input: the PNG as written and what D says of it. In Jupyter it shows
    itself as its picture.

    Example:
        >>> r = dgn.synthesize("demo", "class:7", mode="pixel", steps=64)[0]
        >>> r.image.save("sneaker.png"); r.activation, r.top5[0], r.top1_is_target
    """

    target: Target
    image: Image.Image  # the PNG as written
    activation: float | None  # the target's activation on that PNG (None if the run diverged)
    top5: list[tuple[int, str, float]]  # D's top-5 on the PNG: (class, name, score)
    curve: list[tuple[int, float, float]]  # (step, loss, activation) samples of the search
    seconds: float
    name: str  # the class name for a plain class target, else the target's text
    diverged: str | None = None
    record: dict = field(default_factory=dict, repr=False)  # the whole target JSON
    path: str | None = None  # the PNG's path, where the results folder was kept
    # where the search drove D's scores before its final softmax (the activation and top-5 are scores):
    probability: float | None = None  # D's probability of the target's classes on the PNG
    top5_probability: list[float] | None = None  # D's probability of each top-5 class, beside its score

    @property
    def array(self) -> np.ndarray:
        """The PNG's pixels, uint8 [H, W, C]."""
        a = np.asarray(self.image)
        return a[..., None] if a.ndim == 2 else a

    @property
    def top1_is_target(self) -> bool:
        return bool(self.record.get("top1_is_target"))

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        act = "diverged" if self.diverged else f"{self.activation:.4g}"
        if self.probability is not None:
            act += f" (score), probability {self.probability:.3g}"
        top = f", top-1 {self.top5[0][1]!r}" if self.top5 else ""
        return f"<Result {self.target.text}: activation {act}{top}, {self.image.size[0]} px>"


def load_results(out: str, targets: list[Target], keep_paths: bool = True) -> list[Result]:
    """The results of `targets` in the folder `out`, in that order (images loaded into memory)."""
    results = []
    with Folder.open(out, what="results folder") as top, top.sub("targets", what="targets folder") as folder:
        for target in targets:
            results.append(_result(folder, target, keep_paths))
    return results


def _result(folder: Folder, target: Target, keep_paths: bool) -> Result:
    base = os.path.join(folder.path, target.id)
    record, png = read_result(folder, target.id)
    rec = record.model_dump(by_alias=True)
    top5 = rec.get("top5", [])
    if rec["target"] != target.text:
        raise UsageError(f"{base}.json holds {rec['target']!r}, not {target.text!r}")
    with Image.open(io.BytesIO(png)) as img:
        image = img.copy()
    return Result(
        target=parse_target(rec["target"]),
        image=image,
        activation=rec.get("final_activation"),
        top5=[(t["class"], t["name"], t["score"]) for t in rec.get("top5", [])],
        curve=[tuple(c) for c in rec["loss_curve"]],
        seconds=rec["seconds"],
        name=rec["name"],
        diverged=rec.get("diverged"),
        record=rec,
        path=base + ".png" if keep_paths else None,
        probability=rec.get("final_probability"),
        top5_probability=[t["probability"] for t in top5] if top5 and top5[0].get("probability") is not None else None,
    )
