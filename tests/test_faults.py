"""Fault injection: a run killed at random points, stopped by SIGINT or SIGTERM, writing onto a full
disk, racing a second writer, or resuming over damaged results. Each case checks the exit code, the
one-line message, and that every finished result is byte-identical to an uninterrupted run's (the
PNG, and the JSON without its timing, `seconds`)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.faults

ARGS = ("--all-classes", "--steps", "120")


def engine(art, out, *extra):
    return [
        sys.executable,
        "-m",
        "dgn_engine.cli.main",
        "run",
        "--artifacts",
        art.path,
        "--out",
        str(out),
        "--quiet",
        *ARGS,
        *extra,
    ]


def results(out) -> dict[str, object]:
    """{file: PNG bytes or JSON without timing} of the finished targets."""
    folder = os.path.join(out, "targets")
    found = {}
    for f in sorted(os.listdir(folder)):
        if f.startswith("."):
            continue
        with open(os.path.join(folder, f), "rb") as fh:
            data = fh.read()
        found[f] = {k: v for k, v in json.loads(data).items() if k != "seconds"} if f.endswith(".json") else data
    return found


def assert_same_as_whole(out, whole, complete=True):
    mine, theirs = results(out), results(whole)
    finished = [f for f in mine if f.endswith(".json")]
    for f in finished:
        png = f.replace(".json", ".png")
        assert mine[f] == theirs[f], f
        assert mine[png] == theirs[png], png
    if complete:
        assert set(mine) == set(theirs)


def _whole(tmp_path_factory, art):
    out = tmp_path_factory.mktemp("whole") / "o"
    assert subprocess.run(engine(art, out), capture_output=True).returncode == 0
    return out


@pytest.fixture(scope="module")
def whole(tmp_path_factory, artifacts):
    """The uninterrupted run (pretrained mode) every interrupted one must reproduce."""
    return _whole(tmp_path_factory, artifacts["pretrained"])


def finish(art, out):
    done = subprocess.run(engine(art, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["progress"]["state"] == "finished"


KILL_ARGS = ("--all-classes", "--steps", "300")  # long enough that targets finish over seconds


def _finished(out) -> int:
    folder = out / "targets"
    return len([f for f in os.listdir(folder) if f.endswith(".json")]) if folder.is_dir() else 0


def _until_first_result(proc, out) -> float:
    """Seconds from now until the run's first target is written (the end of start-up)."""
    start = time.monotonic()
    while proc.poll() is None and not _finished(out):
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_sigkill_while_targets_are_written(tmp_path, artifacts, mode):
    """The uninterrupted run is timed from its first finished target to its end; each trial kills a run
    at a seeded fraction of that span after its own first target. The run must still be running at the
    kill and hold some, not all, targets; what was written is whole and right, and the resumed run
    completes it."""
    art = artifacts[mode]
    cmd = lambda out: engine(art, out)[: -len(ARGS)] + list(KILL_ARGS)  # noqa: E731
    whole = tmp_path / "whole"
    proc = subprocess.Popen(cmd(whole), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _until_first_result(proc, whole)
    start = time.monotonic()
    assert proc.wait() == 0
    span, total = time.monotonic() - start, _finished(whole)
    rng = random.Random(13)
    for trial in range(3 if mode == "pretrained" else 2):  # untrained steps cost more
        out = tmp_path / f"k{trial}"
        proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until_first_result(proc, out)
        time.sleep(rng.uniform(0.1, 0.8) * span)
        assert proc.poll() is None, f"trial {trial}: the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < _finished(out) < total, (trial, _finished(out), total)
        assert_same_as_whole(out, whole, complete=False)
        done = subprocess.run(cmd(out), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert_same_as_whole(out, whole)
        assert not [f for f in os.listdir(out / "targets") if f.startswith(".tmp-")]


def test_sigkill_during_export(tmp_path, decoder_file):
    """An export killed at seeded fractions of an uninterrupted export's time, while still running:
    the same command again succeeds in the same folder, and writes the uninterrupted export's files."""
    from dgn_engine.artifacts import load_artifacts

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "dgn_engine.cli.main",
            "export",
            "--classifier",
            "tests.small_models:tiny_rgb",
        ] + [
            "--mode",
            "pretrained",
            "--decoder",
            decoder_file,
            "--batch",
            "3",
            "--taps",
            "features.3",
            "--out",
            str(out),
        ]

    start = time.monotonic()
    assert subprocess.run(cmd(tmp_path / "whole"), capture_output=True).returncode == 0
    took = time.monotonic() - start
    expected = load_artifacts(str(tmp_path / "whole")).manifest["files"]
    rng = random.Random(17)
    for trial in range(2):
        out = tmp_path / f"k{trial}"
        proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * took)
        assert proc.poll() is None, f"trial {trial}: the export ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = subprocess.run(cmd(out), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert load_artifacts(str(out)).manifest["files"] == expected
        assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "whole"))


@pytest.mark.parametrize(
    "sig, code, by", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")]
)
def test_sigint_and_sigterm_stop_cleanly(tmp_path, artifacts, whole, sig, code, by):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    proc = subprocess.Popen(engine(art, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "run.json").is_file():  # written as the first batch starts
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert err.strip().splitlines() == [
        f"dgn-engine: stopped by {by}; finished targets are kept; run the same command again to resume"
    ]
    assert json.loads((out / "run.json").read_text())["progress"]["state"] == "interrupted"
    finish(art, out)
    assert_same_as_whole(out, whole)


def test_two_writers_started_together(tmp_path, artifacts):
    """The issue's race: two runs with other settings on one folder. One wins; the other exits 2 with
    one line (the lock, or the winner's results made otherwise); the folder holds the winner's
    complete results only."""
    art = artifacts["pretrained"]
    out = tmp_path / "c"
    a = subprocess.Popen(engine(art, out, "--steps", "20"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(
        engine(art, out, "--steps", "10", "--seed", "3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert sorted([a.returncode, b.returncode]) == [0, 2], (err_a, err_b)
    loser = err_a if a.returncode == 2 else err_b
    assert len(loser.strip().splitlines()) == 1
    assert "being written by another run" in loser or "holds results made otherwise" in loser
    winner_steps = 20 if a.returncode == 0 else 10
    recs = [v for f, v in results(out).items() if f.endswith(".json")]
    assert len(recs) == 10 and all(r["steps"] == winner_steps for r in recs)


def _mount_tmpfs(path, size) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_full_disk(tmp_path, artifacts, whole):
    """A small tmpfs fills mid-run: exit 2, one line naming the cause, the finished targets kept and
    right; with room again, the same command completes the job."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        art = artifacts["pretrained"]
        out = disk / "o"
        done = subprocess.run(engine(art, out), capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "No space left on device" in done.stderr
        assert_same_as_whole(out, whole, complete=False)
        assert subprocess.run(["mount", "-o", "remount,size=8m", str(disk)]).returncode == 0
        finish(art, out)
        assert_same_as_whole(out, whole)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_damaged_results_are_recomputed_identically(tmp_path, artifacts, whole):
    """Bytes flipped or cut in finished PNGs and JSONs (seeded): the next run recomputes exactly
    those targets and ends with the uninterrupted results."""
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    shutil.copytree(whole, out)
    rng = random.Random(5)
    victims = rng.sample(sorted(os.listdir(out / "targets")), 4)
    for f in victims:
        data = bytearray((out / "targets" / f).read_bytes())
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            i = rng.randrange(len(data))
            data[i] ^= 0xFF
        (out / "targets" / f).write_bytes(bytes(data))
    done = subprocess.run(engine(art, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "recomputing" in done.stdout
    assert_same_as_whole(out, whole)


def test_corrupted_artifacts_never_run(tmp_path, artifacts):
    """Any single flipped byte in any artifacts file: one line naming the file, nothing written."""
    rng = random.Random(7)
    for name in ("weights.bin", "step.onnx", "classifier.onnx", "render.onnx"):
        art_dir = tmp_path / f"art-{name}"
        shutil.copytree(artifacts["pretrained"].path, art_dir)
        data = bytearray((art_dir / name).read_bytes())
        data[rng.randrange(len(data))] ^= 0x01
        (art_dir / name).write_bytes(bytes(data))
        cmd = [
            sys.executable,
            "-m",
            "dgn_engine.cli.main",
            "run",
            "--artifacts",
            str(art_dir),
            "--out",
            str(tmp_path / f"o-{name}"),
            "--quiet",
            *ARGS,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and name in done.stderr and "sha256" in done.stderr
        assert not (tmp_path / f"o-{name}").exists()
