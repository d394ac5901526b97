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


@pytest.mark.parametrize("mode", ["pretrained", "untrained"])
def test_sigkill_at_random_points(tmp_path, tmp_path_factory, artifacts, whole, mode):
    """Seeded random kill times over the whole life of a run (start-up, steps, writes, gallery):
    what was written is either whole and right or absent, and the resumed run completes it."""
    art = artifacts[mode]
    whole = whole if mode == "pretrained" else _whole(tmp_path_factory, art)
    rng = random.Random(13)
    for trial in range(4 if mode == "pretrained" else 2):  # untrained steps cost more
        out = tmp_path / f"k{trial}"
        proc = subprocess.Popen(engine(art, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "targets").is_dir():
            assert_same_as_whole(out, whole, complete=False)
        finish(art, out)
        assert_same_as_whole(out, whole)
        assert not [f for f in os.listdir(out / "targets") if f.startswith(".tmp-")]


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
