"""Nothing silently wrong: provenance of results, one writer per results folder, artifacts integrity,
the files read back validated, and one line (exit 2) for every bad input a careless user gives."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from dgn_engine.cli.main import main
from dgn_engine.targets import parse_target
from tests.conftest import error_line

SMALL = ["--classifier", "tests.small_models:tiny_rgb"]


def run_argv(art, out, *extra):
    return ["run", "--artifacts", art.path, "--out", str(out), "--quiet", *extra]


def files(out):
    folder = out / "targets"
    return {f: (folder / f).read_bytes() for f in sorted(os.listdir(folder)) if not f.startswith(".")}


def record(out, tid):
    return json.loads((out / "targets" / f"{tid}.json").read_text())


# -- provenance ------------------------------------------------------------------------------------


def test_results_record_what_made_them(tmp_path, artifacts):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--target", "class:1", "--steps", "3")) == 0
    rec, run = record(out, "class-1"), json.loads((out / "run.json").read_text())
    for made in (rec, run):
        assert made["provenance"]["artifacts_sha256"] == art.results_digest
        assert set(made["provenance"]["files_sha256"]) == {"weights.bin", "step.onnx", "render.onnx", "classifier.onnx"}
        # the decoder file's digest, by content (its path is not part of what made the results)
        decoder = [d for k, d in art.manifest["sha256"].items() if k.endswith("decoder.pt")]
        assert made["provenance"]["source_files_sha256"] == sorted(set(art.manifest["sha256"].values()))
        assert decoder and decoder[0] in made["provenance"]["source_files_sha256"]
        assert made["display"] == "model" and made["dgn_engine"] and made["spec"]["steps"] == 3
        assert made["results_key"] == run["results_key"]
    import hashlib

    assert rec["png_sha256"] == hashlib.sha256((out / "targets/class-1.png").read_bytes()).hexdigest()


def test_precision_is_what_ran_and_float64_is_the_torch_backends(tmp_path, artifacts, capsys):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    # tf32 is a CUDA mode: on the CPU the record says float32, and the results are float32's bit for bit
    assert (
        main(run_argv(art, out, "--target", "class:1", "--steps", "3", "--precision", "tf32", "--device", "cpu")) == 0
    )
    assert record(out, "class-1")["provenance"]["precision"] == "float32"
    plain = tmp_path / "plain"
    assert main(run_argv(art, plain, "--target", "class:1", "--steps", "3", "--device", "cpu")) == 0
    assert files(out)["class-1.png"] == files(plain)["class-1.png"]
    assert record(out, "class-1")["loss_curve"] == record(plain, "class-1")["loss_curve"]
    capsys.readouterr()
    err = error_line(capsys, run_argv(art, tmp_path / "x", "--target", "class:1", "--precision", "float64"))
    assert "the step-graph backend runs float32 or tf32" in err


def test_a_results_folder_never_mixes_precisions(tmp_path, capsys):
    """Another precision into the same folder: one line naming the change, exit 2, nothing rewritten
    (the torch backend, whose float32 and float64 both run on the CPU; tf32 against float32 on CUDA is
    the same record, provenance.precision)."""
    argv = ["run", "--backend", "torch", *SMALL, "--mode", "untrained", "--target", "class:1", "--steps", "2"]
    out = tmp_path / "o"
    assert main([*argv, "--out", str(out), "--quiet", "--precision", "float32"]) == 0
    before = files(out)
    err = error_line(capsys, [*argv, "--out", str(out), "--quiet", "--precision", "float64"])
    assert "holds results made otherwise (precision float32 -> float64)" in err and "--force" in err
    assert files(out) == before


def test_cuda_sessions_ask_for_the_precision(monkeypatch):
    """onnxruntime's CUDA provider computes in TF32 unless told otherwise (found on an H200)."""
    from dgn_engine.engine.backends import onnx_session

    rt = onnx_session.ort()
    monkeypatch.setattr(rt, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnx_session, "cuda_driver", lambda: True)  # as on a GPU machine
    for (precision, flag), asked in zip((("float32", "0"), ("tf32", "1")), ("auto", "cuda")):
        chosen, device = onnx_session.providers(asked, precision)
        assert device == "cuda" and chosen[0] == ("CUDAExecutionProvider", {"use_tf32": flag})
        assert onnx_session.provider_names(chosen) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_resume_refuses_other_classifier_weights(tmp_path, capsys):
    """Case 1: the same command with perturbed weights must not resume into the folder."""
    from tests.small_models import tiny_rgb

    weights = tmp_path / "perturbed.pt"
    torch.save({k: v + 0.01 * torch.randn_like(v) for k, v in tiny_rgb().state_dict().items()}, weights)
    base = [
        "run",
        "--backend",
        "torch",
        *SMALL,
        "--mode",
        "untrained",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "m"),
        "--quiet",
        "--target",
        "class:0",
    ]
    assert main(base) == 0
    before = files(tmp_path / "m")
    err = error_line(capsys, base + ["--weights", str(weights), "--target", "class:1"])
    assert "holds results made otherwise" in err and "classifier_tensors_sha256" in err and "--force" in err
    assert files(tmp_path / "m") == before


def test_resume_refuses_other_artifacts_and_other_display(tmp_path, artifacts, decoder_file, capsys):
    """Cases 5 and a re-export: results of other artifacts or another display are not mixed in."""
    from tests.conftest import export

    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--all-classes", "--steps", "3")) == 0
    before = files(out)
    err = error_line(capsys, run_argv(art, out, "--all-classes", "--steps", "3", "--display", "original"))
    assert "holds results made otherwise (display model -> original)" in err
    other = export(tmp_path / "other", "pretrained", 3, decoder_file, "--taps", "features.3", "--noise-sigma", "0.07")
    err = error_line(capsys, run_argv(other, out, "--all-classes", "--steps", "3"))
    assert "artifacts_sha256" in err
    assert files(out) == before
    assert main(run_argv(art, out, "--all-classes", "--steps", "3", "--display", "original", "--force")) == 0
    assert all(record(out, f"class-{c}")["display"] == "original" for c in range(10))


# -- one writer ------------------------------------------------------------------------------------


def _engine(art, out, *extra):
    return [sys.executable, "-m", "dgn_engine.cli.main", *run_argv(art, out, *extra)]


def _wait_for(condition, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.02)
    assert condition()


@pytest.mark.slow
def test_second_writer_is_refused_and_a_dead_ones_lock_never_blocks(tmp_path, artifacts, capsys):
    """Case 2: two runs on one --out; the second says who holds the folder. After the holder is
    killed (SIGKILL, no cleanup) the lock is gone with it."""
    art = artifacts["pretrained"]
    out = tmp_path / "c"
    proc = subprocess.Popen(
        _engine(art, out, "--all-classes", "--steps", "400"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: (out / "run.json").is_file())
        err = error_line(capsys, run_argv(art, out, "--all-classes", "--steps", "10", "--seed", "3"))
        assert f"is being written by another run (pid {proc.pid} on" in err
        err = error_line(capsys, ["gallery", str(out)])
        assert "being written by another run" in err
    finally:
        proc.kill()
        proc.wait()
    assert main(run_argv(art, out, "--all-classes", "--steps", "400")) == 0


# -- artifacts integrity ---------------------------------------------------------------------------


@pytest.fixture
def art_copy(tmp_path, artifacts):
    from dgn_engine.artifacts import load_artifacts

    path = tmp_path / "art"
    shutil.copytree(artifacts["pretrained"].path, path)
    return load_artifacts(str(path))


def test_flipped_bytes_in_weights_are_caught(tmp_path, art_copy, capsys):
    """Case 3: a corrupted weights.bin (same size) is refused before anything runs."""
    blob = bytearray((tmp_path / "art/weights.bin").read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 8] = bytes(8)
    (tmp_path / "art/weights.bin").write_bytes(bytes(blob))
    err = error_line(capsys, run_argv(art_copy, tmp_path / "o", "--all-classes", "--steps", "2"))
    assert "weights.bin" in err and "sha256 differs" in err and "export the artifacts again" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "has 100 bytes, the export wrote"),
        (lambda p: p.unlink(), "weights.bin is missing"),
    ],
)
def test_truncated_or_missing_weights_name_the_file(tmp_path, art_copy, capsys, damage, fragment):
    damage(tmp_path / "art/weights.bin")
    for argv in (
        run_argv(art_copy, tmp_path / "o", "--all-classes"),
        ["verify", "--no-torch", "--artifacts", art_copy.path],
    ):
        err = error_line(capsys, argv)
        assert fragment in err and "ONNXRuntimeError" not in err


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda m: m.pop("graphs"), "field 'graphs': field required"),
        (lambda m: m.pop("preprocessing"), "field 'preprocessing': field required"),
        (lambda m: m.update(batch="many"), "field 'batch'"),
        (lambda m: m.update(layout=[1, 2]), "field 'layout'"),
        (lambda m: m["graphs"].pop("step"), "names no step graph"),
    ],
)
def test_damaged_manifest_is_one_line(tmp_path, art_copy, capsys, edit, fragment):
    manifest = json.loads((tmp_path / "art/manifest.json").read_text())
    edit(manifest)
    (tmp_path / "art/manifest.json").write_text(json.dumps(manifest))
    for argv in (
        run_argv(art_copy, tmp_path / "o", "--all-classes"),
        ["verify", "--no-torch", "--artifacts", art_copy.path],
    ):
        err = error_line(capsys, argv)
        assert fragment in err and "export the artifacts again" in err


@pytest.mark.parametrize(
    "option",
    [
        ["--classifier", "vgg16"],
        ["--image-size", "64"],
        ["--g-width", "3"],
        ["--channels", "BGR"],
        ["--mean", "0.4,0.5,0.5"],
    ],
)
def test_options_the_artifacts_fix_are_refused(tmp_path, artifacts, capsys, option):
    """Case 4: an option the artifacts fix, given with another value, is not silently ignored."""
    err = error_line(capsys, run_argv(artifacts["untrained"], tmp_path / "o", "--target", "class:1", *option))
    assert f"fix {option[0]}" in err
    # the value they were exported with is fine
    assert (
        main(
            run_argv(
                artifacts["untrained"],
                tmp_path / "o",
                "--target",
                "class:1",
                "--steps",
                "2",
                "--image-size",
                "32",
                "--classifier",
                "tests.small_models:tiny_rgb",
            )
        )
        == 0
    )


# -- results files read back -----------------------------------------------------------------------


def test_emptied_png_is_recomputed_and_the_gallery_names_it(tmp_path, artifacts, capsys):
    """Case 6: a 0-byte PNG is not a finished target; the gallery leaves it out with a warning."""
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--all-classes", "--steps", "3")) == 0
    good = files(out)
    (out / "targets/class-4.png").write_bytes(b"")
    capsys.readouterr()
    assert main(["gallery", str(out)]) == 0
    err = capsys.readouterr().err
    assert "left out of the gallery" in err and "class-4.png" in err
    assert main(run_argv(art, out, "--all-classes", "--steps", "3")) == 0
    assert "recomputing 1 target(s)" in capsys.readouterr().out
    after = files(out)
    assert after["class-4.png"] == good["class-4.png"]
    assert {f: v for f, v in after.items() if f != "class-4.json"} == {
        f: v for f, v in good.items() if f != "class-4.json"
    }


@pytest.mark.parametrize("content", ["[1, 2]", "null", '{"target": "class:1"}', "{not json"])
def test_garbage_target_json(tmp_path, artifacts, capsys, content):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    assert main(run_argv(art, out, "--all-classes", "--steps", "3")) == 0
    (out / "targets/class-2.json").write_text(content)
    capsys.readouterr()
    assert main(["gallery", str(out)]) == 0
    assert "left out of the gallery" in capsys.readouterr().err
    assert main(run_argv(art, out, "--all-classes", "--steps", "3")) == 0
    assert record(out, "class-2")["target"] == "class:2"


def test_hand_edited_activation_is_named_by_the_gallery(tmp_path, artifacts, capsys):
    out = tmp_path / "o"
    assert (
        main(run_argv(artifacts["pretrained"], out, "--target", "class:1", "--target", "class:2", "--steps", "3")) == 0
    )
    rec = record(out, "class-1")
    rec["final_activation"] = "lots"
    (out / "targets/class-1.json").write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["gallery", str(out)]) == 0
    err = capsys.readouterr().err
    assert "class-1.json" in err and "final_activation" in err
    assert json.loads((out / "summary.json").read_text())["targets"] == 1


@pytest.mark.parametrize("content", ["[1, 2]", "null", "garbage"])
def test_garbage_run_json_is_one_line_and_force_repairs_it(tmp_path, artifacts, capsys, content):
    art = artifacts["pretrained"]
    out = tmp_path / "o"
    argv = run_argv(art, out, "--all-classes", "--steps", "3")
    assert main(argv) == 0
    (out / "run.json").write_text(content)
    (out / "index.html").unlink()
    err = error_line(capsys, argv)
    assert "run.json" in err and "--force" in err
    assert main(argv + ["--force"]) == 0
    assert json.loads((out / "run.json").read_text())["progress"]["state"] == "finished"
    assert (out / "index.html").is_file()
    assert main(argv) == 0


def test_run_json_that_is_a_folder(tmp_path, artifacts, capsys):
    out = tmp_path / "o"
    (out / "run.json").mkdir(parents=True)
    assert "is not a plain file" in error_line(capsys, run_argv(artifacts["pretrained"], out, "--target", "class:1"))


def test_deleted_gallery_is_rebuilt(tmp_path, artifacts):
    out = tmp_path / "o"
    argv = run_argv(artifacts["pretrained"], out, "--target", "class:1", "--steps", "3")
    assert main(argv) == 0
    (out / "index.html").unlink()
    assert main(argv) == 0
    assert (out / "index.html").is_file()


# -- text files ------------------------------------------------------------------------------------


def test_text_files(tmp_path, artifacts, capsys):
    art = artifacts["pretrained"]
    latin1 = tmp_path / "t.txt"
    latin1.write_bytes("class:1\n# caf\xe9\n".encode("latin-1"))
    for option in ("--targets-file", "--labels"):
        err = error_line(capsys, run_argv(art, tmp_path / "o", "--target", "class:1", option, str(latin1)))
        assert "is not UTF-8 text" in err
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffclass:1\nclass:2\n".encode("utf-8"))
    assert main(run_argv(art, tmp_path / "o", "--targets-file", str(bom), "--steps", "2")) == 0
    assert {"class-1.png", "class-2.png"} <= set(files(tmp_path / "o"))


def test_negative_weight_target_needs_no_equals_sign(tmp_path, artifacts):
    assert (
        main(run_argv(artifacts["pretrained"], tmp_path / "o", "--target", "-1*class:1+class:2", "--steps", "2")) == 0
    )
    assert record(tmp_path / "o", parse_target("-1*class:1+class:2").id)["target"] == "-1*class:1+class:2"


# -- options ---------------------------------------------------------------------------------------

ART = "{art}"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (
            ["run", "--artifacts", ART, "--target", "class:1", "--threads", "-4"],
            "argument --threads: must be at least 1",
        ),
        (
            ["run", "--artifacts", ART, "--target", "class:1", "--steps", str(10**20)],
            "argument --steps: must be between 1",
        ),
        (["run", "--artifacts", ART, "--target", "class:1", "--steps", "x"], "argument --steps: expected an integer"),
        (["run", "--artifacts", ART, "--target", "class:1", "--lr", "nan"], "argument --lr: expected a finite number"),
        (
            ["run", "--backend", "torch", *SMALL, "--std", "nan,1,1", "--target", "class:1"],
            "argument --std: expected finite",
        ),
        (
            ["run", "--backend", "torch", *SMALL, "--mean", "inf,0,0", "--target", "class:1"],
            "argument --mean: expected finite",
        ),
        (
            ["run", "--backend", "torch", *SMALL, "--image-size", "0", "--target", "class:1"],
            "argument --image-size: must be between 8 and 2,048",
        ),
        (
            ["run", "--backend", "torch", *SMALL, "--image-size", "100000", "--target", "class:1"],
            "must be between 8 and 2,048",
        ),
        (["export", *SMALL, "--mode", "untrained", "--decoder", "junk"], "--decoder is the pretrained G"),
        (["bench", "--batch", "x,y"], "--batch: expected comma-separated integers"),
        (["bench", "--artifacts", ART, "--batch", "0"], "--batch: every value must be at least 1"),
        (["bench", "--artifacts", ART, "--batch", "2"], "run batches of 3 only"),
        (["bench", "--artifacts", ART, "--json", "{tmp}"], "--json"),
        (["run", "--artifacts", ART, "--target", "class:1", "--nonsense"], "unrecognized arguments: --nonsense"),
    ],
)
def test_bad_options_one_line(tmp_path, artifacts, capsys, argv, fragment):
    argv = [a.replace(ART, artifacts["pretrained"].path).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("run", "export"):
        argv += ["--out", str(tmp_path / "o")]
    err = error_line(capsys, argv)
    assert fragment in err
    assert not (tmp_path / "o").exists()  # a refused command leaves no empty results folder behind


def test_random_weights_for_the_demo_as_help_offers(tmp_path):
    assert (
        main(
            [
                "run",
                "--backend",
                "torch",
                "--classifier",
                "demo",
                "--weights",
                "random",
                "--target",
                "class:3",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 0
    )


def test_train_decoder_refuses_what_would_give_a_useless_decoder(tmp_path, capsys):
    """Case 8 (one image: no held-out measure, no batch of two) and a folder as --out, both refused
    before any training."""
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (32, 32), "red").save(images / "a.png")
    argv = ["train-decoder", "--images", str(images), *SMALL, "--epochs", "1"]
    assert "holds 1 image(s)" in error_line(capsys, argv + ["--out", str(tmp_path / "d.pt")])
    assert "leaves 1 image(s) to train on" in error_line(
        capsys, argv + ["--out", str(tmp_path / "d.pt"), "--heldout", "0"]
    )
    (tmp_path / "dfolder").mkdir()
    assert "is a folder" in error_line(capsys, argv + ["--out", str(tmp_path / "dfolder")])
    assert not (tmp_path / "d.pt").exists()


def test_tensor_digest():
    """D's identity for the torch backend: names, dtypes, shapes and values, 0-dim buffers included
    (BatchNorm's num_batches_tracked)."""
    from dgn_engine.exporter.fingerprint import tensors_sha256

    bn = torch.nn.BatchNorm2d(3)
    base = tensors_sha256(bn.state_dict())
    assert base == tensors_sha256(torch.nn.BatchNorm2d(3).state_dict())
    bn.weight.data[1] += 1e-6
    assert tensors_sha256(bn.state_dict()) != base
    assert tensors_sha256({"w": torch.zeros(2)}) != tensors_sha256({"w": torch.zeros(2, dtype=torch.float64)})
    assert tensors_sha256({"w": torch.zeros(2)}) != tensors_sha256({"v": torch.zeros(2)})
