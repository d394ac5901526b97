"""A job: many targets in batches of K, results per target, resumable, interruptible."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass

from .. import progress
from .._version import __version__
from ..digests import sha256_json
from ..errors import UsageError, setting
from ..files import finite
from ..records import RunRecord, read_record_in, read_result
from ..spec import RunSpec
from ..targets import Target, parse_target
from .gallery import build_gallery, summary_line
from .lock import FolderLock
from .loop import Interrupted
from .results_folder import TARGETS, open_results, run_records
from .runners import Runner
from .target_files import ResultSettings, TargetFiles, relabelled


@dataclass
class JobOptions:
    batch: int = 1
    display: str = "model"  # model: the picture D saw; contrast: it stretched; original: min-max (+ sqrt untrained)
    force: bool = False
    labels: list[str] | None = None
    progress: bool = True
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N disjoint slices of the batches


def made_by(spec: RunSpec, display: str, provenance: dict) -> dict:
    """Everything that decides a target's result besides the target itself."""
    settings = spec.to_json()
    settings.pop("targets")
    made = {"spec": settings, "display": display, "provenance": provenance, "dgn_engine": __version__}
    return json.loads(json.dumps(made))  # as it reads back from run.json (tuples become lists)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(old: dict, new: dict, most: int = 4) -> str:
    """'steps 20 -> 10, seed 0 -> 3': the settings in which two made_by records differ."""
    a, b = _flat(old), _flat(new)

    def show(v):
        text = "unset" if v is None else str(v)
        return text[:12] + "…" if len(text) > 16 else text

    diffs = [
        f"{k.removeprefix('spec.').removeprefix('provenance.')} {show(a.get(k))} -> {show(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return ", ".join(diffs[:most]) + (f" and {len(diffs) - most} more" if len(diffs) > most else "")


class _StopFlag:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) set a flag that the loop checks between steps,
    so a write in progress completes and the run records that it was interrupted."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())

    def __init__(self):
        self.set = False
        self.signal: str | None = None

    def __enter__(self):
        self._old = {}
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame):
        self.set, self.signal = True, signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Job:
    def __init__(
        self, runner: Runner, spec: RunSpec, out_dir: str, options: JobOptions, targets: list[Target] | None = None
    ):
        """`targets`: the spec's, parsed (else parsed here)."""
        self.runner, self.spec, self.out, self.options = runner, spec, out_dir, options
        every = list(targets) if targets is not None else [parse_target(t) for t in spec.targets]
        k = max(1, options.batch)
        # batches are cut at the same places of the whole list whatever the shard: a target's
        # floating-point result can depend on its row in the batch
        batches = [every[i : i + k] for i in range(0, len(every), k)]
        if options.shard:
            index, count = options.shard
            batches = batches[index::count]
        self.batch_list, self.targets = batches, [t for b in batches for t in b]
        self.suffix = f"-shard-{options.shard[0]}-of-{options.shard[1]}" if options.shard else ""
        self.run_name = f"run{self.suffix}.json"
        self.run_file = os.path.join(out_dir, self.run_name)
        self.made_by = made_by(spec, options.display, runner.provenance())
        self.key = sha256_json(self.made_by)[:16]
        labels = options.labels or runner.labels
        self.settings = ResultSettings(spec, options.display, labels, self.made_by, self.key)
        self.damaged = self.done = self.renamed = 0
        self.folder = self.tdir = None  # files.Folder handles, opened by run()

    # -- files ---------------------------------------------------------------------------------
    def is_done(self, target: Target) -> bool:
        """Its JSON is a valid record of this very target made as this run would make it, and its PNG
        the one the JSON's scores are of (a PNG cut short, emptied, replaced or copied from another
        target is recomputed)."""
        js = target.id + ".json"
        if self.tdir.kind(js) is None:
            return False
        try:
            record, _ = read_result(self.tdir, target.id)
            if record.target != target.text:
                raise UsageError("the record of another target")
            if record.results_key != self.key:
                return False
        except UsageError:
            self.damaged += 1
            return False
        self._relabel(target, record.model_dump(by_alias=True, exclude_unset=True))
        return True

    def _relabel(self, target: Target, record: dict) -> None:
        """Labels name classes and change nothing else: a finished result named with other labels gets
        the current names (and the gallery is rebuilt), never a mix of old and new names."""
        new = relabelled(record, self.settings, target)
        if new != record:
            self.tdir.write_json(target.id + ".json", finite(new))
            self.renamed += 1

    def _prepare(self) -> None:
        """Under the lock: what a killed run was writing goes, and a folder made otherwise is refused."""
        if not self.options.shard:  # a shard sharing the folder cannot tell its own leftovers from the others' files
            for folder in (self.folder, self.tdir):
                for f in folder.names():
                    if f.startswith(".tmp-"):
                        folder.remove(f)
        if self.folder.kind(self.run_name) not in (None, "file"):
            raise UsageError(f"{self.run_file!r} is not a plain file; remove it, or use another {setting('out')}")
        records = [self.run_name] + [n for n in run_records(self.folder) if n != self.run_name]
        for run_name in records if not self.options.force else []:
            if self.folder.kind(run_name) is None:
                continue
            old = read_record_in(self.folder, run_name, RunRecord, "run record")
            if old.results_key != self.key:
                settings = {k: v for k, v in old.spec.items() if k != "targets"}
                previous = {
                    "spec": settings,
                    "display": old.display,
                    "provenance": old.provenance,
                    "dgn_engine": old.model_extra.get("dgn_engine"),
                }
                raise UsageError(
                    f"{self.out!r} holds results made otherwise ({differences(previous, self.made_by)}); use "
                    f"another {setting('out')}, or {setting('force', True)} to recompute its targets this way"
                )

    def _write_run(self, done: int, seconds: float, state: str) -> None:
        shard = {"shard": f"{self.options.shard[0]}/{self.options.shard[1]}"} if self.options.shard else {}
        self.folder.write_json(
            self.run_name,
            {
                **shard,
                **self.made_by,
                "spec": self.spec.to_json(),
                "results_key": self.key,
                "backend": self.runner.describe(),
                "batch": self.options.batch,
                "display": self.options.display,
                "progress": {"done": done, "total": len(self.targets), "state": state},
                "seconds": round(seconds, 3),
            },
        )

    def _batches(self, finished: set[Target]) -> list[list[Target]]:
        """The unfinished batches (cut once, in __init__): a resumed job regroups nothing. A batch cut
        short by a kill while its files were being written is run again whole; only its missing
        targets are written."""
        return [b for b in self.batch_list if not all(t in finished for t in b)]

    # -- running -------------------------------------------------------------------------------
    def run(self, log=print) -> dict:
        with contextlib.ExitStack() as held:
            self.folder = held.enter_context(open_results(self.out, create=True))
            if not os.access(self.out, os.W_OK | os.X_OK):
                raise UsageError(f"the output folder {self.out!r} is not writable; choose another {setting('out')}")
            shard_locks = [FolderLock(self.folder, shared=True), FolderLock(self.folder, f".lock{self.suffix}")]
            for lock in shard_locks if self.options.shard else [FolderLock(self.folder)]:
                held.enter_context(lock)
            self.tdir = held.enter_context(self.folder.sub(TARGETS, create=True, what="targets folder"))
            self._prepare()
            try:
                return self._run(log)
            except OSError as e:  # a full disk, a folder made read-only mid-run
                raise UsageError(
                    f"writing results to {self.out!r} failed ({e.strerror or e}); the {self.done} finished targets "
                    "are kept, fix the cause and run the same command again"
                ) from None

    def _run(self, log) -> dict:
        finished = {t for t in self.targets if self.is_done(t)}  # reads each target's JSON once
        done = self.done = len(finished)
        if self.damaged:
            log(f"recomputing {self.damaged} target(s) whose result files are damaged or do not match")
        if self.renamed:
            log(f"renamed the classes of {self.renamed} finished target(s) with the current labels")
        if done == len(self.targets):
            log(f"nothing to do: all {len(self.targets)} targets{self._of_shard()} in {self.out!r} are finished")
            if self.renamed or self._record_is_stale():  # new labels, a --force over a damaged run.json
                self._write_run(done, 0.0, "finished")
                log(summary_line(build_gallery(self.folder)))
                return {
                    "gallery": self.gallery,
                    "computed": 0,
                    "done": done,
                    "total": len(self.targets),
                    "summary": None,
                }
            return {"gallery": None, "computed": 0, "done": done, "total": len(self.targets), "summary": None}
        if done:
            log(f"resuming: {done} of {len(self.targets)} targets{self._of_shard()} already finished")
        started = time.perf_counter()
        computed = 0
        n, steps = len(self.targets), self.spec.steps
        # one bar in target-steps, advanced every step, so the ETA holds from the first seconds even
        # when one batch takes many minutes; its label counts the finished targets
        bar = progress.bar(
            n * steps, initial=done * steps, unit="step", desc=f"targets {done}/{n}", disable=not self.options.progress
        )
        try:
            with _StopFlag() as stop:
                # run.json says "running" only once a stop is caught here (a signal before would end the
                # process without marking the run interrupted)
                self._write_run(done, 0.0, "running")
                pending = self._batches(finished)
                already = {id(b): sum(t in finished for t in b) for b in pending}  # a batch cut short by a kill

                def on_step(batch, steps):  # target-steps: the batch's unfinished targets, each step
                    bar.update((len(batch) - already[id(batch)]) * steps)

                for _batch, files in self.runner.results(pending, self.settings, on_step, lambda: stop.set):
                    new = [f for f in files if f.target not in finished]
                    self._write_results(new)
                    finished.update(f.target for f in new)
                    done += len(new)
                    self.done = done
                    computed += len(new)
                    bar.n = done * steps  # exact also where a batch diverged and stopped early
                    bar.set_description(f"targets {done}/{n}")
                    self._write_run(done, time.perf_counter() - started, "running")
                    if stop.set:
                        raise Interrupted(stop.signal)
        except Interrupted:
            self._write_run(done, time.perf_counter() - started, "interrupted")
            raise Interrupted(stop.signal) from None
        finally:
            bar.close()
        self._write_run(done, time.perf_counter() - started, "finished")
        summary = build_gallery(self.folder)
        log(summary_line(summary))
        return {
            "gallery": self.gallery,
            "computed": computed,
            "done": done,
            "total": len(self.targets),
            "seconds": time.perf_counter() - started,
            "summary": summary,
        }

    @property
    def gallery(self) -> str:
        """The page the run (re)built; the caller says where it is, if the folder outlives the call."""
        return os.path.join(os.path.abspath(self.out), "index.html")

    def _of_shard(self) -> str:
        return f" of shard {self.options.shard[0]}/{self.options.shard[1]}" if self.options.shard else ""

    def _record_is_stale(self) -> bool:
        if self.folder.kind("index.html") != "file":
            return True
        try:
            record = read_record_in(self.folder, self.run_name, RunRecord, "run record")
        except UsageError:
            return True
        return record.results_key != self.key or record.progress.state != "finished"

    def _write_results(self, files: list[TargetFiles]) -> None:
        for f in files:  # the record after its PNG: a target is finished once its JSON names that PNG
            self.tdir.write(f.target.id + ".png", f.png)
            self.tdir.write_json(f.target.id + ".json", finite(f.record))
