"""A careless or hostile user's files: links and foreign folders, manifests that point outside their
folder, damaged values, unbounded or blocking reads, NaN, colliding or overlong target names, a results
key that a timing would change, mixed labels. Each case: the exit code, one line, and nothing outside
the folder changed (a victim file's bytes and the listing of the folder's neighbours)."""

import hashlib
import json
import os
import shutil
import signal
import struct
import zlib

import pytest

from dgn_engine.artifacts import folder_lock, load_artifacts
from dgn_engine.cli.main import main
from dgn_engine.errors import UsageError
from dgn_engine.targets import parse_target
from tests.conftest import error_line, export

pytestmark = pytest.mark.faults


def run_argv(art, out, *extra):
    path = art if isinstance(art, str) else art.path
    return ["run", "--artifacts", path, "--out", str(out), "--quiet", "--steps", "2", *extra]


def tree(folder) -> dict:
    """Every file under `folder` with its bytes (links as their target's name), to show nothing changed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = "link to " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[rel] = f.read()
    return found


@pytest.fixture
def victim(tmp_path):
    """A file of someone else's beside the folders the tests hand to dgn-engine."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"keep me")
    (folder / ".tmp-theirs").write_bytes(b"not dgn-engine's")
    return folder


class timeout:
    """Fails the test instead of hanging it (a FIFO read would block forever)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)

    def _fire(self, *_):
        raise AssertionError(f"hung for {self.seconds} s")

    def __exit__(self, *exc):
        signal.alarm(0)


# -- links and foreign folders --------------------------------------------------------------------


def test_a_linked_lock_is_never_followed(tmp_path, artifacts, victim, capsys):
    out = tmp_path / "o"
    out.mkdir()
    os.symlink(victim / "secret.txt", out / ".lock")
    before = tree(victim)
    err = error_line(capsys, run_argv(artifacts["pretrained"], out, "--target", "class:1"))
    assert "lock file" in err and "is a link or not a plain file" in err
    assert tree(victim) == before


def test_a_linked_targets_folder_is_never_followed(tmp_path, artifacts, victim, capsys):
    out = tmp_path / "o"
    out.mkdir()
    os.symlink(victim, out / "targets")
    before = tree(victim)
    err = error_line(capsys, run_argv(artifacts["pretrained"], out, "--target", "class:1"))
    assert "targets" in err and "is not a folder" in err
    assert tree(victim) == before  # its .tmp- file is still there


def test_a_linked_record_or_png_is_replaced_not_followed(tmp_path, artifacts, victim):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1")) == 0
    for name in ("class-1.json", "class-1.png"):
        os.unlink(out / "targets" / name)
        os.symlink(victim / "secret.txt", out / "targets" / name)
    before = tree(victim)
    assert main(run_argv(art, out, "--target", "class:1")) == 0  # recomputed, written in place of the links
    assert tree(victim) == before
    assert not os.path.islink(out / "targets" / "class-1.json")
    assert json.loads((out / "targets" / "class-1.json").read_text())["target"] == "class:1"


def test_a_folder_that_is_not_a_results_folder_is_refused(tmp_path, artifacts, capsys):
    """Its index.html, summary.json, sheets and .tmp- files are someone else's: nothing is touched."""
    out = tmp_path / "website"
    out.mkdir()
    for name in ("index.html", "summary.json", "sheet-001.png", ".tmp-draft", "about.html"):
        (out / name).write_text("theirs")
    before = tree(out)
    err = error_line(capsys, run_argv(artifacts["pretrained"], out, "--target", "class:1"))
    assert "is not a results folder" in err and "'about.html'" in err
    err = error_line(capsys, run_argv(artifacts["pretrained"], out, "--target", "class:1", "--force"))
    assert "is not a results folder" in err
    assert tree(out) == before


def test_gallery_into_a_foreign_folder_is_refused(tmp_path, artifacts, capsys):
    art, res = artifacts["pretrained"], tmp_path / "r"
    assert main(run_argv(art, res, "--target", "class:1")) == 0
    other = tmp_path / "site"
    other.mkdir()
    (other / "index.html").write_text("theirs")
    (other / "notes.md").write_text("theirs")
    before = tree(other)
    err = error_line(capsys, ["gallery", str(res), "--into", str(other)])
    assert "is not a results folder" in err
    assert tree(other) == before
    capsys.readouterr()
    assert main(["gallery", str(res), "--into", str(tmp_path / "merged")]) == 0  # a new folder is fine
    assert (tmp_path / "merged" / "targets" / "class-1.png").is_file()


def test_an_empty_out_is_one_line_and_leaves_nothing(tmp_path, artifacts, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = error_line(capsys, ["run", "--artifacts", artifacts["pretrained"].path, "--out", "", "--target", "class:1"])
    assert "out" in err and "empty" in err
    assert os.listdir(tmp_path) == []


# -- the manifest names only its own files ---------------------------------------------------------


def _copy(art, tmp_path) -> str:
    dst = tmp_path / "art"
    shutil.copytree(art.path, dst, ignore=shutil.ignore_patterns(".lock"))
    return str(dst)


def _edit_manifest(path, change):
    with open(os.path.join(path, "manifest.json")) as f:
        m = json.load(f)
    change(m)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(m, f)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["graphs"]["classifier"].__setitem__("file", "/etc/passwd"),
        lambda m: m["graphs"]["classifier"].__setitem__("file", "../victim/secret.txt"),
        lambda m: m["files"].__setitem__("../../../../etc/passwd", {"size": 1, "sha256": "0" * 64}),
        lambda m: m["files"].__setitem__("/etc/shadow", {"size": 1, "sha256": "0" * 64}),
    ],
    ids=["absolute graph", "dotdot graph", "dotdot in files", "absolute in files"],
)
def test_the_manifest_names_only_plain_files_in_its_folder(tmp_path, artifacts, victim, capsys, change):
    path = _copy(artifacts["pretrained"], tmp_path)
    _edit_manifest(path, change)
    with pytest.raises(UsageError, match="not a plain name in its folder") as e:
        load_artifacts(path)
    assert "passwd" not in str(e.value) and "shadow" not in str(e.value) and "secret" not in str(e.value)
    err = error_line(capsys, run_argv(path, tmp_path / "o", "--target", "class:1"))
    assert "not a plain name in its folder" in err


def test_a_graph_file_that_is_a_link_is_refused(tmp_path, artifacts, victim):
    path = _copy(artifacts["pretrained"], tmp_path)
    os.unlink(os.path.join(path, "classifier.onnx"))
    os.symlink(os.path.join(artifacts["pretrained"].path, "classifier.onnx"), os.path.join(path, "classifier.onnx"))
    with pytest.raises(UsageError, match="classifier.onnx is a link or not a plain file"):
        load_artifacts(path)


def _huge_plan(m):
    """A plan of 10^7 feature channels at batch 4096, with the state it implies: consistent, but past
    any machine's memory (tens of TB)."""
    from dgn_engine.plan import GeneratorPlan
    from dgn_engine.state import state_shapes

    m["plan"]["feature_channels"], m["batch"] = 10**7, 4096
    shapes = state_shapes(m["mode"], GeneratorPlan.from_json(m["plan"]), m["spec"]["optimizer"]["name"])
    m["state"] = [{"name": n, "shape": list(s)} for n, s in shapes.items()]


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m.__setitem__("batch", 10**9), "field 'batch'"),
        (lambda m: m.__setitem__("num_classes", 3), "num_classes 3 but an output layout of (10,)"),
        (lambda m: m.__setitem__("num_classes", 10**9), "field 'num_classes'"),
        (lambda m: m["layout"].__setitem__("features.3", [16, -16, 16]), "field 'layout.features.3.1'"),
        (lambda m: m["plan"].__setitem__("feature_size", "many"), "is damaged"),
        (lambda m: m["state"][0].__setitem__("name", "beta"), "is not what the plan makes"),
        (lambda m: m["state"][0].__setitem__("shape", [10**9, 10**9]), "is not what the plan makes"),
        (lambda m: _huge_plan(m), "more than this machine's memory"),
    ],
    ids=[
        "batch 1e9",
        "classes vs layout",
        "classes 1e9",
        "negative dim",
        "string in plan",
        "unknown state",
        "huge state",
        "huge plan",
    ],
)
def test_damaged_manifest_values_are_one_line(tmp_path, artifacts, capsys, change, fragment):
    path = _copy(artifacts["pretrained"], tmp_path)
    _edit_manifest(path, change)
    with pytest.raises(UsageError) as e:
        load_artifacts(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "change",
    [lambda m: m.__setitem__("batch", 4), lambda m: m["graphs"]["step"]["inputs"][0].__setitem__("shape", [3, 7])],
    ids=["batch", "graph input"],
)
def test_a_manifest_that_disagrees_with_its_graphs_is_one_line(tmp_path, artifacts, capsys, change):
    path = _copy(artifacts["pretrained"], tmp_path)
    _edit_manifest(path, change)
    for file, entry in load_artifacts(path).manifest["files"].items():  # still the graphs the export wrote
        assert hashlib.sha256(open(os.path.join(path, file), "rb").read()).hexdigest() == entry["sha256"]
    err = error_line(capsys, run_argv(path, tmp_path / "o", "--target", "class:1"))
    assert "it was changed; export the artifacts again" in err or "the manifest was changed" in err


def test_an_export_waits_for_a_run_loading_the_folder(tmp_path, artifacts):
    """Readers share the artifacts' lock while they check and load the graphs; an export takes it alone."""
    art = artifacts["pretrained"]
    with art.reading(), art.reading():  # runs load side by side
        with pytest.raises(UsageError, match="has been loaded by a run"):
            with folder_lock(art.path, exclusive=True, wait_s=0.3):
                pass
    with folder_lock(art.path, exclusive=True, wait_s=0.3):
        with pytest.raises(UsageError, match="has been exported into"):
            with folder_lock(art.path, exclusive=False, wait_s=0.3):
                pass


def test_every_graph_is_loaded_before_the_first_step(tmp_path, artifacts):
    """So an export --force during a run cannot give its PNGs one D and its top-5 another."""
    from dgn_engine.engine.backends.step_graph import StepGraphBackend

    path = _copy(artifacts["pretrained"], tmp_path)
    backend = StepGraphBackend(load_artifacts(path), device="cpu")
    for name in os.listdir(path):  # the folder emptied, as a new export would replace every file
        os.unlink(os.path.join(path, name))
    import numpy as np

    scores = backend.classify(np.zeros((1, 3, 32, 32), np.float32))
    assert scores["output"].shape == (1, 10)


def test_a_reexport_of_the_same_model_resumes(tmp_path, decoder_file, capsys):
    """The results key holds no timing or path: a second export (another cache, another day) of the
    same model gives the same key, and the finished results are reused."""
    a = export(tmp_path / "a", "pretrained", 2, decoder_file)
    b = export(tmp_path / "b", "pretrained", 2, decoder_file)
    out = tmp_path / "o"
    assert main(run_argv(a, out, "--target", "class:1")) == 0
    capsys.readouterr()
    assert main(["run", "--artifacts", b.path, "--out", str(out), "--steps", "2", "--target", "class:1"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_an_interrupted_exports_temporary_folder_is_removed(tmp_path, decoder_file):
    out = tmp_path / "a"
    export(out, "pretrained", 2, decoder_file)
    (out / ".export-killed").mkdir()
    (out / ".export-killed" / "step.onnx").write_bytes(b"half")
    export(out, "pretrained", 2, decoder_file, "--force")
    assert not (out / ".export-killed").exists()


# -- strict JSON, target names ---------------------------------------------------------------------


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_target_writes_strict_json_and_a_working_page(tmp_path, artifacts):
    out = tmp_path / "o"
    argv = ["run", "--artifacts", artifacts["pretrained"].path, "--out", str(out), "--quiet", "--steps", "20"]
    assert main([*argv, "--target", "1e38*class:0", "--target", "class:1"]) == 0
    for name in os.listdir(out / "targets"):
        if name.endswith(".json"):
            _strict((out / "targets" / name).read_text())
    rec = _strict((out / "targets" / f"{parse_target('1e38*class:0').id}.json").read_text())
    assert rec["diverged"] and rec["last_step_activation"] is None
    _strict((out / "summary.json").read_text())
    page = (out / "index.html").read_text()
    data = page.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in data
    assert len(_strict(data)) == 2


def test_labels_cannot_break_the_page(tmp_path, artifacts):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["<!--", "</script><script>alert(1)</script>"] + [f"c{i}" for i in range(8)]))
    out = tmp_path / "o"
    assert (
        main(
            run_argv(
                artifacts["pretrained"], out, "--target", "class:0", "--target", "class:1", "--labels", str(labels)
            )
        )
        == 0
    )
    page = (out / "index.html").read_text()
    data = page.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in data and [r["name"] for r in json.loads(data)] == ["<!--", "</script><script>alert(1)</script>"]


def test_long_targets_get_bounded_distinct_names(tmp_path, artifacts):
    mix = "+".join([f"0.{i + 1}*class:{i}" for i in range(10)] + [f"channel:features.3:{c}" for c in range(10)])
    other = "+".join([f"0.{i + 1}*class:{9 - i}" for i in range(10)] + [f"channel:features.3:{c}" for c in range(10)])
    ids = {parse_target(t).id for t in (mix, other)}
    assert len(ids) == 2 and all(len(i) <= 64 + 13 for i in ids)
    upper, lower = parse_target("channel:Conv:1").id, parse_target("channel:conv:1").id
    assert upper.lower() != lower.lower()  # distinct on a case-insensitive disk too
    out = tmp_path / "o"
    assert main(run_argv(artifacts["pretrained"], out, "--target", mix, "--target", other)) == 0
    assert len([f for f in os.listdir(out / "targets") if f.endswith(".png")]) == 2


def test_a_result_copied_over_another_target_is_recomputed(tmp_path, artifacts, capsys):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1", "--target", "class:2")) == 0
    for ext in (".json", ".png"):
        shutil.copy(out / "targets" / f"class-1{ext}", out / "targets" / f"class-2{ext}")
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                "--artifacts",
                art.path,
                "--out",
                str(out),
                "--steps",
                "2",
                "--target",
                "class:1",
                "--target",
                "class:2",
            ]
        )
        == 0
    )
    assert "recomputing 1 target" in capsys.readouterr().out
    assert json.loads((out / "targets" / "class-2.json").read_text())["target"] == "class:2"


def test_new_labels_rename_finished_results(tmp_path, artifacts, capsys):
    art, out = artifacts["pretrained"], tmp_path / "o"
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_text("\n".join(f"old{i}" for i in range(10)))
    new.write_text("\n".join(f"new{i}" for i in range(10)))
    assert main(run_argv(art, out, "--target", "class:1", "--labels", str(old))) == 0
    png = (out / "targets" / "class-1.png").read_bytes()
    capsys.readouterr()
    argv = ["run", "--artifacts", art.path, "--out", str(out), "--steps", "2", "--labels", str(new)]
    assert main([*argv, "--target", "class:1", "--target", "class:2"]) == 0
    assert "renamed the classes of 1 finished target" in capsys.readouterr().out
    for c in (1, 2):
        rec = json.loads((out / "targets" / f"class-{c}.json").read_text())
        assert rec["name"] == f"new{c}" and all(t["name"].startswith("new") for t in rec["top5"])
    assert (out / "targets" / "class-1.png").read_bytes() == png  # names only: the image is kept
    assert "old1" not in (out / "index.html").read_text()


# -- bounded reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--labels", "--targets-file"])
def test_endless_or_blocking_text_files_are_one_line(tmp_path, artifacts, capsys, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source in ("/dev/zero", str(fifo)):
        with timeout(30):
            err = error_line(
                capsys, run_argv(artifacts["pretrained"], tmp_path / "o", "--target", "class:1", option, source)
            )
        assert "not a plain file" in err


def test_a_fifo_or_device_in_targets_neither_hangs_nor_breaks_the_gallery(tmp_path, artifacts, capsys):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1", "--target", "class:2")) == 0
    os.unlink(out / "targets" / "class-2.json")
    os.mkfifo(out / "targets" / "class-2.json")
    os.symlink("/dev/zero", out / "targets" / "class-3.json")
    capsys.readouterr()
    with timeout(60):
        assert main(["gallery", str(out)]) == 0
    err = capsys.readouterr().err
    assert "class-2.json" in err and "class-3.json" in err and "Traceback" not in err
    with timeout(120):  # the run takes the FIFO as damaged and writes its result in its place
        assert main(run_argv(art, out, "--target", "class:1", "--target", "class:2")) == 0
    assert json.loads((out / "targets" / "class-2.json").read_text())["target"] == "class:2"


def _png_header_only(width, height) -> bytes:
    """A tiny PNG that declares a huge image (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_png_bomb_with_a_matching_record_is_left_out(tmp_path, artifacts, capsys):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1", "--target", "class:2")) == 0
    bomb = _png_header_only(20000, 20000)
    (out / "targets" / "class-2.png").write_bytes(bomb)
    rec = json.loads((out / "targets" / "class-2.json").read_text())
    rec["png_sha256"] = hashlib.sha256(bomb).hexdigest()
    (out / "targets" / "class-2.json").write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["gallery", str(out)]) == 0
    captured = capsys.readouterr()
    assert "class-2.png" in captured.err and "Traceback" not in captured.err
    assert "1 targets" in captured.out


@pytest.mark.parametrize("where", ["targets/class-1.json", "run.json"])
def test_deeply_nested_json_is_one_line(tmp_path, artifacts, capsys, where):
    art, out = artifacts["pretrained"], tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1")) == 0
    (out / where).write_text("[" * 200_000 + "]" * 200_000)
    capsys.readouterr()
    if where == "run.json":
        err = error_line(capsys, run_argv(art, out, "--target", "class:1"))
        assert "nests deeper than" in err or "not valid JSON" in err
    else:
        assert main(run_argv(art, out, "--target", "class:1")) == 0  # damaged: recomputed
        assert json.loads((out / where).read_text())["target"] == "class:1"


def test_a_class_index_of_thousands_of_digits_is_one_line(tmp_path, artifacts, capsys):
    err = error_line(capsys, run_argv(artifacts["pretrained"], tmp_path / "o", "--target", "class:" + "9" * 5000))
    assert "digits" in err and len(err) < 400


def test_threads_beyond_the_cores_are_capped(tmp_path, artifacts, capsys):
    assert main(run_argv(artifacts["pretrained"], tmp_path / "o", "--target", "class:1", "--threads", "4096")) == 0
    assert f"using {os.cpu_count()}" in capsys.readouterr().err


def test_a_folder_name_that_is_not_utf8(tmp_path, artifacts, capsys, monkeypatch):
    """A byte that is not UTF-8 in --out and in the current folder's path: the run, its messages and its
    page work (the name shows with a "?"), no UnicodeEncodeError after the targets were computed."""
    odd = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: a lone surrogate in Python's str
    os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    monkeypatch.chdir(os.path.join(tmp_path, odd))
    assert (
        main(["run", "--artifacts", artifacts["pretrained"].path, "--out", odd, "--steps", "2", "--target", "class:1"])
        == 0
    )
    assert "Traceback" not in capsys.readouterr().err
    page = open(os.path.join(odd, "index.html"), "rb").read().decode("utf-8")  # valid UTF-8
    assert "<title>dgn-engine: caf?</title>" in page  # the byte shows as "?"
