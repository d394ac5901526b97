"""A job: many targets in batches of K, results per target, resumable, interruptible."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import progress
from ..errors import UsageError
from ..preprocessing import display_original
from ..spec import RunSpec
from ..targets import OUTPUT, Target, objective_weights, parse_target
from .backend import Backend
from .gallery import build_gallery, summary_line
from .loop import Interrupted, Outcome, run_batch
from .outputs import atomic_write, png_bytes, read_json, read_png, write_json

TOP_K = 5


@dataclass
class JobOptions:
    batch: int = 1
    display: str = "model"  # model: the picture D saw ; original: per-image min-max (+ sqrt untrained)
    force: bool = False
    labels: list[str] | None = None
    progress: bool = True


def spec_key(spec: RunSpec) -> str:
    """Identifies the settings of a run, whatever its targets (results of equal keys are reusable)."""
    d = spec.to_json()
    d.pop("targets")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class _StopFlag:
    """Ctrl-C sets a flag that the loop checks between steps, so a write in progress completes."""

    def __init__(self):
        self.set = False

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, *_):
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Job:
    def __init__(self, backend: Backend, spec: RunSpec, out_dir: str, options: JobOptions):
        self.backend, self.spec, self.out, self.options = backend, spec, out_dir, options
        self.targets = [parse_target(t) for t in spec.targets]
        self.key = spec_key(spec)
        self.dir = os.path.join(out_dir, "targets")

    # -- files ---------------------------------------------------------------------------------
    def _paths(self, target: Target) -> tuple[str, str]:
        base = os.path.join(self.dir, target.id)
        return base + ".png", base + ".json"

    def is_done(self, target: Target) -> bool:
        png, js = self._paths(target)
        if not (os.path.isfile(png) and os.path.isfile(js)):
            return False
        try:
            return read_json(js).get("spec_key") == self.key
        except (OSError, ValueError):
            return False

    def _prepare(self) -> None:
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the output folder {self.out!r}: {e.strerror}") from None
        if not os.access(self.dir, os.W_OK):
            raise UsageError(f"the output folder {self.out!r} is not writable; choose another --out")
        for folder in (self.out, self.dir):  # what a killed run was writing when it died
            for f in os.listdir(folder):
                if f.startswith(".tmp-"):
                    os.unlink(os.path.join(folder, f))
        run_file = os.path.join(self.out, "run.json")
        if os.path.isfile(run_file) and not self.options.force:
            try:
                old = read_json(run_file).get("spec_key")
            except (OSError, ValueError):
                old = None
            if old != self.key:
                raise UsageError(
                    f"{self.out!r} holds a run with other settings; use another --out, "
                    "or --force to recompute its targets with these settings"
                )

    def _write_run(self, done: int, seconds: float, state: str) -> None:
        write_json(
            os.path.join(self.out, "run.json"),
            {
                "spec": self.spec.to_json(),
                "spec_key": self.key,
                "backend": self.backend.describe(),
                "batch": self.options.batch,
                "display": self.options.display,
                "progress": {"done": done, "total": len(self.targets), "state": state},
                "seconds": round(seconds, 3),
            },
        )

    def _batches(self, k: int, finished: set[Target]) -> list[list[Target]]:
        """The unfinished batches, always cut at the same places of the target list: a target's
        floating-point result can depend on its row in the batch, so a resumed job regroups nothing.
        A batch cut short by a kill while its files were being written is run again whole; only its
        missing targets are written."""
        batches = [self.targets[i : i + k] for i in range(0, len(self.targets), k)]
        return [b for b in batches if not all(t in finished for t in b)]

    # -- running -------------------------------------------------------------------------------
    def run(self, log=print) -> dict:
        self._prepare()
        finished = {t for t in self.targets if self.is_done(t)}  # reads each target's JSON once
        done = len(finished)
        if done == len(self.targets):
            log(f"nothing to do: all {len(self.targets)} targets in {self.out!r} are finished")
            return {"computed": 0, "done": done, "total": len(self.targets), "summary": None}
        if done:
            log(f"resuming: {done} of {len(self.targets)} targets already finished")
        k = max(1, self.options.batch)
        started = time.perf_counter()
        computed = 0
        show = self.options.progress
        bar = progress.bar(len(self.targets), initial=done, unit="target", desc="targets", disable=not show)
        step_bar = progress.bar(
            self.spec.steps, unit="step", desc="steps", leave=False, disable=not (show and sys.stderr.isatty())
        )
        self._write_run(done, 0.0, "running")
        try:
            with _StopFlag() as stop:
                for batch in self._batches(k, finished):
                    step_bar.reset()
                    outcomes = run_batch(
                        self.backend,
                        batch,
                        self.spec,
                        on_step=lambda s: step_bar.update(1),
                        should_stop=lambda: stop.set,
                    )
                    new = [o for o in outcomes if o.target not in finished]
                    self._write_results(new)
                    finished.update(o.target for o in new)
                    done += len(new)
                    computed += len(new)
                    bar.update(len(new))
                    self._write_run(done, time.perf_counter() - started, "running")
                    if stop.set:
                        raise Interrupted()
        except Interrupted:
            self._write_run(done, time.perf_counter() - started, "interrupted")
            raise
        except OSError as e:
            raise UsageError(
                f"writing results to {self.out!r} failed ({e.strerror or e}); the {done} "
                "finished targets are kept, fix the cause and run the same command again"
            ) from None
        finally:
            step_bar.close()
            bar.close()
        self._write_run(done, time.perf_counter() - started, "finished")
        summary = build_gallery(self.out)
        log(summary_line(summary))
        log(f"gallery: {os.path.join(os.path.abspath(self.out), 'index.html')}")
        return {
            "computed": computed,
            "done": done,
            "total": len(self.targets),
            "seconds": time.perf_counter() - started,
            "summary": summary,
        }

    def _write_results(self, outcomes: list[Outcome]) -> None:
        pp = self.backend.preprocessing
        ok = [o for o in outcomes if o.image is not None]
        pixels = {
            id(o): (
                display_original(o.image, pp.order, self.spec.mode == "untrained")
                if self.options.display == "original"
                else pp.to_pixels(o.image)
            )
            for o in ok
        }
        for o in ok:
            atomic_write(self._paths(o.target)[0], png_bytes(pixels[id(o)]))
        # Classify what was written: the top-5 tells the truth about the file a person looks at.
        seen = {}
        if ok:
            readback = np.stack([pp.to_model(read_png(self._paths(o.target)[0], pp.channels)) for o in ok])
            seen = self._split(self.backend.classify(readback), ok)
            if self.options.display == "original":
                true = np.stack([pp.to_model(pp.to_pixels(o.image)) for o in ok])
                seen_true = self._split(self.backend.classify(true), ok)
            # what the search saw last and the median before it became pixels: where the target is lost
            seen_median = self._split(self.backend.classify(np.stack([o.image for o in ok])), ok)
            seen_last = self._split(self.backend.classify(np.stack([o.last_image for o in ok])), ok)
        for o in outcomes:
            record = {
                "target": o.target.text,
                "id": o.target.id,
                "name": self._target_name(o.target),
                "spec_key": self.key,
                "mode": self.spec.mode,
                "seed": self.spec.seed,
                "steps": self.spec.steps,
                "backend": self.backend.name,
                "display": self.options.display,
                "loss_curve": o.curve,
                "last_step_activation": o.last_activation,
                "seconds": round(o.seconds, 3),
                "diverged": o.diverged,
            }
            if o.image is not None:
                record.update(self._report(o.target, seen[id(o)]))
                record["faithfulness"] = {view: self._brief(o.target, acts[id(o)]) for view, acts in
                                          (("last_step", seen_last), ("median", seen_median), ("png", seen))}
                if self.options.display == "original":
                    record["model_view"] = self._report(o.target, seen_true[id(o)])
            else:
                atomic_write(self._paths(o.target)[0], png_bytes(np.zeros((8, 8, pp.channels), np.uint8)))
            write_json(self._paths(o.target)[1], record)

    def _labels(self) -> list[str] | None:
        return self.options.labels or self.backend.labels

    def _class_name(self, c: int) -> str:
        labels = self._labels()
        return labels[c] if labels and c < len(labels) else str(c)

    def _target_name(self, target: Target) -> str:
        """The class name for a plain class target, else the target's text."""
        t = target.terms
        if len(t) == 1 and t[0].kind == "class" and t[0].weight == 1.0 and self._labels():
            return self._class_name(t[0].index)
        return target.text

    @staticmethod
    def _split(acts: dict[str, np.ndarray], outcomes: list[Outcome]) -> dict[int, dict[str, np.ndarray]]:
        return {id(o): {n: a[i] for n, a in acts.items()} for i, o in enumerate(outcomes)}

    def _brief(self, target: Target, acts: dict[str, np.ndarray]) -> dict:
        report = self._report(target, acts)
        return {"activation": report["final_activation"], "top1": report["top5"][0]["class"],
                "top1_is_target": report["top1_is_target"]}

    def _report(self, target: Target, acts: dict[str, np.ndarray]) -> dict:
        weights, _ = objective_weights([target], {n: a.shape for n, a in acts.items()}, self.spec.lam)
        activation = float(sum((weights[n][0] * acts[n]).sum() for n in weights))
        scores = acts[OUTPUT]
        order = np.argsort(-scores, kind="stable")[:TOP_K]
        classes = {t.index for t in target.terms if t.kind == "class"}
        return {
            "final_activation": activation,
            "top5": [{"class": int(c), "name": self._class_name(int(c)), "score": float(scores[c])} for c in order],
            "top1_is_target": bool(classes) and int(order[0]) in classes,
        }
