"""A job's batches on a Ray cluster: one actor per device loads the artifacts once (shipped through Ray's
object store, so workers need no shared file system) and runs whole batches; the driver hands them out
and writes every file itself (jobs.Job). Imported only for --ray / ray=: a plain run never imports Ray."""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from typing import Callable

from .. import demo
from ..artifacts import MANIFEST, Artifacts, load_artifacts
from ..errors import UsageError, setting
from ..targets import Target
from .backends import engine_backend
from .loop import Interrupted, run_batch
from .runners import Batches
from .target_files import ResultSettings, TargetFiles, target_files

RESTARTS = 2  # a crashed worker process is restarted by Ray and its batch run again, this often
TRIES = 3  # a batch whose worker died this often (each time for good) stops the job: it is the batch
START_S = 600  # workers not started by then (a busy cluster, one still scaling up) end the run in one line
WAIT_S = 0.25  # how often the driver looks at Ctrl-C while batches run
PROGRESS_S = 1.0  # how often it asks the busy workers how far their batches are


def ray_module():
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"{setting('ray')} needs Ray on this machine and the cluster: pip install 'dgn-engine[ray]'"
        ) from None
    return ray


def _reachable(address: str) -> None:
    """ray://HOST:PORT and HOST:PORT answer, or one line now (Ray itself retries for a long time)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"{setting('ray', address)}: give auto, ray://HOST:PORT (Ray Client) or HOST:PORT (the head's GCS)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(
            f"{setting('ray', address)}: nothing answers at {hostport} ({e.strerror or e}); start the cluster "
            "(ray start --head) or check the address"
        ) from None


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (auto, ray://HOST:PORT, HOST:PORT) or, with None, start a local Ray
    on this machine's CPUs and GPUs. True when this call connected (close() then disconnects); False
    where the caller had already (ray.init in a notebook)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _reachable(address)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if address == "auto":
            why = "no running Ray cluster was found (start one: ray start --head, or give its address)"
        else:
            why = str(e).splitlines()[0].rstrip(":")
            if address is not None:  # what a reachable cluster that refuses us most often wants
                why += (
                    " (a cluster with token authentication, the default of Ray's local clusters since 2.59, "
                    "needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set here: ray get-auth-token)"
                )
        raise UsageError(f"{setting('ray', address or '(local)')}: {why}") from None
    return True


def _artifacts_folder(files: dict[str, bytes], digest: str) -> str:
    """The shipped artifacts as a folder on this node, written once per node and digest (atomically:
    workers of one node may race) under the cache."""
    root = os.path.join(demo.cache_dir(), "ray-artifacts")
    folder = os.path.join(root, digest[:16])
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker of this node was first
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class BatchWorker:
    """A Ray actor: the artifacts' backend on one device, running whole batches into their files. The
    artifacts come with each call as [object reference] and load on the first (a restarted worker loads
    them again on the call Ray retries)."""

    def __init__(self, digest: str, backend: str, device: str, threads: int, precision: str):
        self.digest, self.choice, self.backend = digest, (backend, device, threads, precision), None
        self.at = (None, 0)  # (the batch's number, its steps done): progress() reads it while run() runs

    def _load(self, shipped: list) -> None:
        import ray

        if self.backend is None:
            art = load_artifacts(_artifacts_folder(ray.get(shipped[0]), self.digest))
            name, device, threads, precision = self.choice
            self.backend = engine_backend(name, art, device, threads, precision)

    def info(self, shipped: list) -> dict:
        import ray

        try:
            self._load(shipped)
        except Exception as e:  # one line for the driver, not an actor's traceback
            # a UsageError unrendered: the driver names its settings as its caller does
            return {"error": e.raw if isinstance(e, UsageError) else f"{type(e).__name__}: {e}"}
        return {
            "provenance": self.backend.provenance(),
            "describe": self.backend.describe(),
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

    def run(self, shipped: list, number: int, batch: list[Target], settings: ResultSettings) -> list[TargetFiles]:
        self._load(shipped)
        self.at = (number, 0)

        def step(done: int) -> None:
            self.at = (number, done)

        return target_files(self.backend, settings, run_batch(self.backend, batch, settings.spec, on_step=step))

    def progress(self) -> tuple[int | None, int]:
        return self.at


class RayRunner:
    """Runner over Ray actors (runners.Runner). Use as a context manager: leaving it removes the workers
    (and the local Ray it started)."""

    def __init__(
        self,
        art: Artifacts,
        backend: str,
        address: str | None = None,
        workers: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        precision: str = "float32",
        most: int | None = None,
        log: Callable[[str], None] = print,
    ):
        self.art, self.address, self.log = art, address, log
        self.name, self.labels, self.layout = backend, art.labels, art.layout
        with art.reading():  # a damaged folder is refused here, before it is shipped
            self.files = art.read_files()
        self.ray = ray_module()
        self.connected = connect(address)
        self.workers = []
        try:
            self._start(backend, workers, device, threads, precision, most)
        except BaseException:
            self.close()
            raise

    def _start(self, backend, workers, device, threads, precision, most) -> None:
        ray = self.ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if device == "cuda" and not gpus:
            raise UsageError(
                f"{setting('device', 'cuda')}: the Ray cluster has no GPUs (ray status lists its resources)"
            )
        on_gpu = gpus > 0 and device != "cpu"
        each = threads or 1  # CPUs per worker, and its onnxruntime threads
        room = gpus if on_gpu else cpus // each
        if workers is not None and workers > room:
            raise UsageError(
                f"{setting('workers', workers)}: the Ray cluster has room for {room} "
                f"({f'{gpus} GPUs' if on_gpu else f'{cpus} CPUs, {each} per worker'})"
            )
        if room == 0:
            raise UsageError(
                f"the Ray cluster has no room for a worker of {f'{each} CPUs' if each > 1 else 'one CPU'} "
                f"({cpus} in all; ray status lists its resources); add nodes, or lower {setting('threads')}"
            )
        count = max(1, min(workers or room, most or room))
        self.shipped = [ray.put(self.files)]  # in a list: workers fetch it themselves, when they load
        # two threads: progress() answers while run() works
        actor = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, max_concurrency=2)(BatchWorker)
        job = uuid.uuid4().hex[:8]
        self.workers = [
            actor.options(name=f"dgn-engine-worker-{job}-{i}", num_cpus=each, num_gpus=1 if on_gpu else 0).remote(
                self.art.manifest_sha256, backend, "cuda" if on_gpu else "cpu", each, precision
            )
            for i in range(count)
        ]
        try:
            infos = ray.get([w.info.remote(self.shipped) for w in self.workers], timeout=START_S)
        except ray.exceptions.RayActorError as e:
            raise UsageError(f"a Ray worker could not start: {str(e).splitlines()[0]}") from None
        except ray.exceptions.GetTimeoutError:
            raise UsageError(
                f"the {count} Ray workers did not start within {START_S} s: the cluster's resources are taken "
                f"(ray status); try fewer {setting('workers')}, or again later"
            ) from None
        errors = [i["error"] for i in infos if "error" in i]
        if errors:
            raise UsageError(f"a Ray worker could not start: {errors[0]}")
        if any(i["provenance"] != infos[0]["provenance"] for i in infos):
            raise UsageError(
                "the Ray workers would make different results (another device or precision on some nodes); "
                f"give {setting('device')} so that all run alike"
            )
        self._provenance = infos[0]["provenance"]
        self._describe = {
            **infos[0]["describe"],
            "artifacts": self.art.path,
            "ray": {
                "address": self.address or "local",
                "version": ray.__version__,
                "workers": count,
                "nodes": len({i["node"] for i in infos}),
            },
        }

    def provenance(self) -> dict:
        return self._provenance

    def describe(self) -> dict:
        return self._describe

    def results(self, batches, settings, on_step, should_stop) -> Batches:
        """Each worker runs one batch at a time, the next as soon as it returns; a worker that dies for
        good (its batch in flight comes back as lost) leaves the rest to the others."""
        ray = self.ray
        pending, idle = collections.deque(enumerate(batches)), list(self.workers)
        flying: dict = {}  # the batch's result reference -> (worker, number, batch)
        seen = collections.Counter()  # steps reported per batch number
        lost = collections.Counter()
        settings_ref = ray.put(settings)
        asked, asked_at = {}, time.monotonic()
        while pending or flying:
            while idle and pending:
                worker, (number, batch) = idle.pop(0), pending.popleft()
                seen[number] = 0
                flying[worker.run.remote(self.shipped, number, batch, settings_ref)] = (worker, number, batch)
            ready, _ = ray.wait(list(flying), num_returns=1, timeout=WAIT_S)
            if should_stop():
                raise Interrupted()
            if time.monotonic() - asked_at > PROGRESS_S:
                asked = self._progress(asked, flying, seen, on_step)
                asked_at = time.monotonic()
            for ref in ready:
                worker, number, batch = flying.pop(ref)
                try:
                    files = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    self._lost(worker, batch, e, lost)
                    pending.appendleft((number, batch))
                    continue
                except ray.exceptions.RayTaskError as e:
                    if isinstance(e.cause, UsageError):
                        raise UsageError(str(e.cause)) from None
                    raise
                idle.append(worker)
                yield batch, files

    def _progress(self, asked: dict, flying: dict, seen: collections.Counter, on_step) -> dict:
        """Steps the busy workers did since last asked, for the progress bar: the answers to the last
        questions that are in, and new questions (answered by the worker's second thread)."""
        ray = self.ray
        answered, _ = ray.wait(list(asked), num_returns=len(asked), timeout=0) if asked else ([], [])
        batches = {number: batch for _, number, batch in flying.values()}
        for ref in answered:
            try:
                number, done = ray.get(ref)
            except ray.exceptions.RayError:  # a worker lost meanwhile: its batch reports again elsewhere
                continue
            if number in batches and done > seen[number]:
                on_step(batches[number], done - seen[number])
                seen[number] = done
        return {w.progress.remote(): w for w, _, _ in flying.values()}

    def _lost(self, worker, batch: list[Target], error, lost: collections.Counter) -> None:
        self.workers.remove(worker)
        lost[id(batch)] += 1
        first = batch[0].text
        if lost[id(batch)] >= TRIES:
            raise UsageError(
                f"the batch starting with {first} lost {TRIES} Ray workers; the finished targets are kept, "
                "look at the workers' logs (ray logs) and run the same command again to resume"
            )
        if not self.workers:
            raise UsageError(
                "every Ray worker died; the finished targets are kept, run the same command again to resume"
            )
        why = str(error).splitlines()[0][:120]
        self.log(f"a Ray worker died ({why}); its batch starting with {first} runs again on another")

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        self.workers = []
        if self.connected:
            self.ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
