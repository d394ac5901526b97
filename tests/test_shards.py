"""Shards for batch schedulers: --shard I/N runs a disjoint slice of the batches, and the shards' folders
merge into the plain run's results."""

import json
import os
import subprocess
import sys

import pytest

from dgn_engine.cli.main import main
from tests.conftest import error_line


def run_argv(art, out, *extra):
    return ["run", "--artifacts", art.path, "--all-classes", "--steps", "3", "--out", str(out), "--quiet", *extra]


def results(out) -> dict[str, object]:
    """Each target file of the folder: PNG bytes, and the JSON without its timing."""
    folder = out / "targets"
    found = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".png"):
            found[f] = (folder / f).read_bytes()
        elif f.endswith(".json"):
            found[f] = {k: v for k, v in json.loads((folder / f).read_text()).items() if k != "seconds"}
    return found


@pytest.fixture(scope="module")
def plain(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    assert main(run_argv(artifacts["pretrained"], out)) == 0
    return out


def test_shards_in_own_folders_merge_into_the_plain_runs_files(artifacts, plain, tmp_path, capsys):
    art = artifacts["pretrained"]  # batch 3: 4 batches of the 10 classes, shard 0/3 takes two
    shards = [tmp_path / f"s{i}" for i in range(3)]
    for i, out in enumerate(shards):
        assert main(run_argv(art, out, "--shard", f"{i}/3")) == 0
    parts = [results(out) for out in shards]
    assert [len(p) // 2 for p in parts] == [4, 3, 3]  # batches {0, 3}, {1}, {2} of sizes 3, 3, 3, 1
    assert not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])
    assert json.loads((shards[0] / "run-shard-0-of-3.json").read_text())["progress"]["total"] == 4
    merged = tmp_path / "merged"
    capsys.readouterr()
    assert main(["gallery", *map(str, shards), "--into", str(merged)]) == 0
    assert "merged 10 results" in capsys.readouterr().out
    assert results(merged) == results(plain)
    page = (merged / "index.html").read_text()
    assert all(f"targets/class-{c}.png" in page for c in range(10))
    # the merged folder is a results folder of that job: a plain run finds nothing to do
    assert main(run_argv(art, merged)) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_shards_sharing_a_folder(artifacts, plain, tmp_path, capsys):
    art, out = artifacts["pretrained"], tmp_path / "shared"
    assert main(run_argv(art, out, "--shard", "1/2")) == 0
    assert main(run_argv(art, out, "--shard", "0/2")) == 0
    assert sorted(f for f in os.listdir(out) if f.startswith(".lock")) == [
        ".lock",
        ".lock-shard-0-of-2",
        ".lock-shard-1-of-2",
    ]
    assert results(out) == results(plain)
    capsys.readouterr()
    assert main(run_argv(art, out, "--shard", "0/2")) == 0  # resumes: its targets are there
    assert "nothing to do: all 6 targets of shard 0/2" in capsys.readouterr().out
    # a shard of other settings is refused by the other shard's record, as a plain run is
    err = error_line(capsys, run_argv(art, out, "--shard", "1/2", "--seed", "5"))
    assert "holds results made otherwise (seed 0 -> 5)" in err


def test_shards_run_side_by_side_but_a_whole_run_waits_for_them(artifacts, tmp_path, capsys):
    """While a shard holds the folder (its lock on .lock is shared), another shard starts and a whole
    run or the gallery is refused in one line, since it would clean up the shards' files in flight."""
    from dgn_engine.engine.lock import FolderLock
    from dgn_engine.files import Folder

    art, out = artifacts["pretrained"], tmp_path / "shared"
    out.mkdir()
    folder = Folder.open(str(out))
    with FolderLock(folder, shared=True), FolderLock(folder, ".lock-shard-0-of-2"):  # shard 0 running
        assert main(run_argv(art, out, "--shard", "1/2")) == 0
        assert "is being written by another run" in error_line(capsys, run_argv(art, out))
        assert "is being written by another run" in error_line(capsys, ["gallery", str(out)])
        assert "is being written by another run" in error_line(capsys, run_argv(art, out, "--shard", "0/2"))


def test_merging_other_settings_is_refused(artifacts, plain, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(run_argv(artifacts["pretrained"], other, "--seed", "1", "--target", "class:1")) == 0
    err = error_line(capsys, ["gallery", str(plain), str(other), "--into", str(tmp_path / "m")])
    assert "hold results made otherwise" in err and "merge only the shards of one job" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--shard", "3/3"], "I counts from 0 to N-1"),
        (["--shard", "a/b"], "expected I/N"),
        (["--shard", "1/0"], "I counts from 0 to N-1"),
        (["--shard", "2"], "expected I/N"),
    ],
)
def test_bad_shards(artifacts, tmp_path, capsys, argv, fragment):
    assert fragment in error_line(capsys, run_argv(artifacts["pretrained"], tmp_path / "o", *argv))


def test_gallery_of_several_folders_needs_into(plain, capsys):
    assert "--into DIR" in error_line(capsys, ["gallery", str(plain), str(plain)])


# -- the deployment examples, as written ---------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_slurm_array_runs_as_written(artifacts, plain, tmp_path):
    """Each array task as Slurm would start it (its two variables set), then the merge step."""
    env = {
        **os.environ,
        "ARTIFACTS": artifacts["pretrained"].path,
        "OUT": str(tmp_path / "results"),
        "DEVICE": "cpu",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    for task in range(3):
        script = os.path.join(ROOT, "deploy", "slurm", "array.sh")
        done = subprocess.run(
            ["bash", script, "--steps", "3"],
            env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    shards = sorted(str(p) for p in (tmp_path / "results").iterdir())
    assert main(["gallery", *shards, "--into", str(tmp_path / "all")]) == 0
    assert results(tmp_path / "all") == results(plain)


def test_kubernetes_indexed_job_is_valid_and_its_command_parses():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import yaml

    from dgn_engine.cli.main import parser

    with open(os.path.join(ROOT, "deploy", "k8s", "indexed-job.yaml")) as f:
        job = yaml.safe_load(f)
    # the Kubernetes schemas bundled in kubernetes-validate (offline), rejecting unknown fields
    kubernetes_validate.validate(job, "1.37.0", strict=True)
    misspelt = json.loads(json.dumps(job))
    misspelt["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, "1.37.0", strict=True)
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    index = container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for shard in range(spec["completions"]):  # the image's entrypoint is `dgn-engine run`
        args = parser().parse_args(["run", *(a.replace("$(SHARD)", str(shard)) for a in container["args"])])
        assert args.shard == (shard, spec["completions"]) and args.out == f"/results/shard-{shard}"
