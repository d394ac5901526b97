"""Ray (--ray, ray=): the batches on Ray actors, the files written by the driver. Each case compares the
folder with a plain run's, byte for byte (the PNG, and the JSON without its timing, `seconds`): the batches
are cut at the same places and each runs whole on one worker, so nothing may differ.

A real local Ray: the CLI's own (a subprocess per run) first, then one started here with two CPUs."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from dgn_engine.cli.main import main
from tests.conftest import error_line
from tests.test_faults import results

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

STEPS = "200"  # about a second per batch of 3 on one thread: long enough to kill a worker mid-batch


def run_argv(art, out, *extra):
    return ["run", "--artifacts", art.path, "--all-classes", "--steps", STEPS, "--out", str(out), *extra]


def engine(art, out, *extra):
    return [sys.executable, "-m", "dgn_engine.cli.main", *run_argv(art, out, "--quiet", *extra)]


def finished(out) -> int:
    folder = os.path.join(out, "targets")
    return len([f for f in os.listdir(folder) if f.endswith(".json")]) if os.path.isdir(folder) else 0


def wait_for(out, count: int, proc=None, limit_s: float = 120.0) -> None:
    until = time.monotonic() + limit_s
    while finished(out) < count:
        assert proc is None or proc.poll() is None, "the run ended early"
        assert time.monotonic() < until, f"fewer than {count} results after {limit_s} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def plain(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    assert main(run_argv(artifacts["pretrained"], out, "--quiet")) == 0
    return out


def test_bad_ray_input(artifacts, tmp_path, capsys, monkeypatch):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert "nothing answers at 127.0.0.1:9" in error_line(capsys, run_argv(art, out, "--ray", "ray://127.0.0.1:9"))
    assert "nothing answers at 127.0.0.1:9" in error_line(capsys, run_argv(art, out, "--ray", "127.0.0.1:9"))
    assert "give auto, ray://HOST:PORT" in error_line(capsys, run_argv(art, out, "--ray", "somewhere"))
    assert "add --ray" in error_line(capsys, run_argv(art, out, "--workers", "2"))
    assert "--backend step-graph" in error_line(capsys, run_argv(art, out, "--ray", "--backend", "torch"))
    monkeypatch.setitem(sys.modules, "ray", None)  # as where the extra is not installed
    assert "pip install 'dgn-engine[ray]'" in error_line(capsys, run_argv(art, out, "--ray"))
    assert not ray.is_initialized()


def test_a_plain_run_never_imports_ray(artifacts, tmp_path):
    code = (
        "import sys\nfrom dgn_engine.cli.main import main\n"
        f"assert main({run_argv(artifacts['pretrained'], tmp_path / 'o', '--quiet', '--steps', '2')!r}) == 0\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stopped_and_killed_drivers_resume(artifacts, plain, tmp_path):
    """The CLI's own local Ray: SIGTERM stops it as a plain run stops (exit 143, run.json says
    interrupted); SIGKILL of the driver leaves only whole files; the next --ray run completes the job.
    One worker while killing: the next batch is then surely in flight (a second of work)."""
    art, out = artifacts["pretrained"], tmp_path / "o"
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        proc = subprocess.Popen(
            engine(art, out, "--ray", "--workers", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for(out, finished(out) + 3, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        if sig == signal.SIGTERM:
            assert "stopped by SIGTERM" in err and "Traceback" not in err, err
            assert json.loads((out / "run.json").read_text())["progress"]["state"] == "interrupted"
    assert finished(out) == 6
    done = subprocess.run(engine(art, out, "--ray"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert results(out) == results(plain)
    record = json.loads((out / "run.json").read_text())
    assert record["backend"]["ray"]["address"] == "local" and record["progress"]["state"] == "finished"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def workers() -> list[str]:
    return sorted(n for n in ray.util.list_named_actors() if n.startswith("dgn-engine-worker"))


def where(actor) -> tuple[int, tuple]:
    """The actor's process id and (batch number, steps done) of its batch in flight."""
    return ray.get(actor.__ray_call__.remote(lambda worker: (os.getpid(), worker.at)), timeout=60)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Killer(threading.Thread):
    """Once `count` results are written (two batches: both workers then hold their last batch in flight),
    kill one worker: for good (ray.kill), or its process with SIGKILL, a crash that Ray restarts. Records
    what it saw; whatever goes wrong here is raised again by `check`, so a kill that did not happen fails
    the test."""

    def __init__(self, out, count: int, for_good: bool):
        super().__init__(daemon=True)
        self.out, self.count, self.for_good = out, count, for_good
        self.error: BaseException | None = None
        self.seen: dict = {}

    def run(self):
        try:
            wait_for(self.out, self.count)
            actor = ray.get_actor(workers()[0])
            pid, (number, _) = where(actor)
            assert number is not None, "the worker had no batch in flight"
            self.seen.update(pid=pid, batch=number)
            if self.for_good:
                ray.kill(actor, no_restart=True)
                with pytest.raises(ray.exceptions.RayActorError):
                    where(actor)
            else:
                os.kill(pid, signal.SIGKILL)
                until = time.monotonic() + 60
                while True:  # the restarted actor (another process) runs the same batch again
                    try:
                        again, (number, _) = where(actor)
                    except ray.exceptions.RayActorError:  # asked while it was restarting
                        again = number = None
                    if again not in (None, pid) and number == self.seen["batch"]:
                        break
                    assert time.monotonic() < until, f"no restarted worker ran batch {self.seen['batch']}"
                    time.sleep(0.05)
                self.seen["restarted_pid"] = again
            until = time.monotonic() + 10
            while not gone(pid):
                assert time.monotonic() < until, f"worker process {pid} still runs"
                time.sleep(0.05)
        except BaseException as e:
            self.error = e

    def check(self):
        self.join(timeout=60)
        assert not self.is_alive(), "the killer still runs"
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("no_restart", [True, False], ids=["killed-for-good", "crashed-and-restarted"])
def test_two_workers_make_the_plain_runs_files_though_one_is_killed(
    local_ray, artifacts, plain, tmp_path, capsys, no_restart
):
    art, out = artifacts["pretrained"], tmp_path / "o"
    killer = Killer(out, 6, no_restart)
    killer.start()
    assert main(run_argv(art, out, "--ray", "--workers", "2", "--threads", "1")) == 0
    killer.check()
    assert gone(killer.seen["pid"])
    if not no_restart:
        assert killer.seen["restarted_pid"] != killer.seen["pid"]
    log = capsys.readouterr().out
    # killed for good: the driver runs the lost batch on the other worker; a crash: Ray restarts the
    # worker and retries the batch there, unseen by the driver
    assert ("a Ray worker died" in log) == no_restart, log
    assert results(out) == results(plain)
    record = json.loads((out / "run.json").read_text())
    assert record["backend"]["ray"]["workers"] == 2 and record["progress"]["done"] == 10
    assert ray.is_initialized()  # a Ray the caller started is left running, without the job's workers
    until = time.monotonic() + 10
    while workers() and time.monotonic() < until:
        time.sleep(0.1)
    assert not workers()


def test_the_api_on_ray(local_ray, artifacts, plain, tmp_path, capsys):
    import dgn_engine as dgn

    out = tmp_path / "o"
    found = dgn.Engine(artifacts["pretrained"].path, ray=True, workers=2, threads=1).run(
        dgn.all_classes(10), out=out, steps=int(STEPS), progress=False
    )
    assert [r.target.text for r in found] == [f"class:{c}" for c in range(10)]
    assert results(out) == results(plain)
    assert "room for 2" in error_line(
        capsys, run_argv(artifacts["pretrained"], tmp_path / "w", "--ray", "--workers", "3")
    )


def test_synthesize_on_ray(local_ray, tmp_path, monkeypatch):
    """ray=True: synthesize's batches on the Ray this process started, two workers; the plain call's files."""
    import dgn_engine as dgn
    from tests.small_models import tiny_rgb

    monkeypatch.setenv("DGN_ENGINE_CACHE", str(tmp_path / "cache"))
    settings = dict(mode="pixel", steps=20, batch=2, seed=1, progress=False)  # pixel: the quickest export
    targets = dgn.all_classes(4)
    on_ray = dgn.synthesize(tiny_rgb(), targets, ray=True, workers=2, out=tmp_path / "ray", **settings)
    plain = dgn.synthesize(tiny_rgb(), targets, out=tmp_path / "plain", **settings)
    assert [r.target for r in on_ray] == [r.target for r in plain] == targets
    assert results(tmp_path / "ray") == results(tmp_path / "plain")
    record = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert record["backend"]["ray"]["workers"] == 2 and record["progress"]["done"] == 4
    assert "ray" not in json.loads((tmp_path / "plain" / "run.json").read_text())["backend"]
    assert ray.is_initialized()  # the caller's Ray is left running, without the call's workers
    until = time.monotonic() + 10
    while workers() and time.monotonic() < until:
        time.sleep(0.1)
    assert not workers()
