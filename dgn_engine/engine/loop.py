"""One batch of targets through N steps on any backend."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..rng import NoiseStreams, TransformStreams
from ..spec import RunSpec
from ..targets import Target, objective_weights, weighted_activation
from .backends.protocol import Backend
from .outputs import median_image

CURVE_POINTS = 100  # loss-curve samples per target (and the host reads per batch)


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C, SIGTERM); the batch in flight is dropped."""

    def __init__(self, signal: str | None = None):
        super().__init__(signal or "SIGINT")
        self.signal = signal


@dataclass
class Outcome:
    target: Target
    image: np.ndarray | None  # median of the kept snapshots, model space [C, H, W]
    last_image: np.ndarray | None = None  # the image of the last step, model space
    curve: list[list[float]] = field(default_factory=list)  # [step, loss, activation]
    last_activation: float = float("nan")
    diverged: str | None = None
    seconds: float = 0.0


def transform_streams(backend: Backend, spec: RunSpec, targets: list[Target]) -> TransformStreams | None:
    """The transforms' parameters for these targets, where the backend's step takes them."""
    if not backend.transforms:
        return None
    size = backend.preprocessing.image_size
    return TransformStreams(spec.seed, targets, spec.transforms, size, size)


def run_batch(
    backend: Backend,
    targets: list[Target],
    spec: RunSpec,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Outcome]:
    started = time.perf_counter()
    backend.start(targets, spec)
    noise = NoiseStreams(spec.seed, targets, backend.features)
    transforms = transform_streams(backend, spec, targets)
    keep = set(spec.snapshots.steps(spec.steps))
    read_every = max(1, spec.steps // CURVE_POINTS)
    outcomes = [Outcome(t, None) for t in targets]
    snapshots: list[np.ndarray] = []
    for step in range(spec.steps):
        if should_stop is not None and should_stop():
            raise Interrupted()
        last = step == spec.steps - 1
        read = step == 0 or (step + 1) % read_every == 0 or last
        params = transforms.next() if transforms else None
        draw = noise.next() * spec.noise.scale(step, spec.steps)
        out = backend.step(draw, read=read, image=step in keep or last, transform=params)
        if step in keep:
            snapshots.append(out.image)
        if last:
            for row, o in enumerate(outcomes):
                o.last_image = out.image[row]
        if read:
            bad = ~np.isfinite(out.loss)
            for o, loss, act in zip(outcomes, out.loss, out.activation):
                o.curve.append([step + 1, float(loss), float(act)])
                o.last_activation = float(act)
            if bad.any():
                why = f"loss became {out.loss[bad][0]} at step {step + 1}; the batch was stopped"
                for o in outcomes:
                    o.diverged = why
                break
        if on_step is not None:
            on_step(step + 1)
    seconds = time.perf_counter() - started
    for row, o in enumerate(outcomes):
        o.seconds = seconds / len(targets)
        if o.diverged is None and snapshots:
            o.image = median_image([s[row] for s in snapshots])
    if spec.snapshots.pick == "best" and snapshots and outcomes[0].diverged is None:
        for row, o in enumerate(outcomes):
            o.image = best_snapshot(backend, o.target, spec, [o.image] + [s[row] for s in snapshots])
    return outcomes


def best_snapshot(backend: Backend, target: Target, spec: RunSpec, candidates: list[np.ndarray]) -> np.ndarray:
    """The candidate image on which D, without noise or transforms, scores the target highest (the
    first of equals). Each is scored as its PNG's pixels, so the image written is the image chosen."""
    pp = backend.preprocessing
    candidates = [pp.to_model(pp.to_pixels(c)) for c in candidates]
    weights, _ = objective_weights([target], backend.layout, spec.lam)
    scores = weighted_activation(weights, backend.classify(np.stack(candidates)))
    return candidates[int(np.argmax(scores))]
