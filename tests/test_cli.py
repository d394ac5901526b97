"""The command line: help texts, and one clear line with exit code 2 for every bad input."""

import subprocess
import sys

import pytest
import torch

from dgn_engine.cli.main import main, parser
from tests.conftest import error_line

SMALL = ["--classifier", "tests.small_models:tiny_rgb"]


def test_help_for_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "dgn_engine.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "preferred inputs" in out.stdout
    commands = parser()._subparsers._group_actions[0].choices
    assert {"run", "export", "verify", "gallery", "train-decoder"} <= set(commands)
    for name, sub in commands.items():
        out = subprocess.run(
            [sys.executable, "-m", "dgn_engine.cli.main", name, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and len(sub.description) > 200, name  # a paragraph that explains
        for action in sub._actions:  # every option says what it does
            assert action.help, (name, action.dest)


def test_missing_weight_file(capsys, tmp_path):
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            "--weights",
            str(tmp_path / "nope.pth"),
            "--mode",
            "untrained",
            "--target",
            "class:1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "does not exist" in err


def test_truncated_weight_file(capsys, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    path.write_bytes(path.read_bytes()[:200])
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            "--weights",
            str(path),
            "--mode",
            "untrained",
            "--target",
            "class:1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "cannot be read" in err


def test_weights_of_another_architecture(capsys, tmp_path):
    path = tmp_path / "other.pth"
    sd = {k: v for k, v in __import__("tests.small_models", fromlist=["x"]).tiny_rgb().state_dict().items()}
    torch.save(sd, path)
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            "--weights",
            str(path),
            "--mode",
            "untrained",
            "--target",
            "class:1",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "tensor 'features.0.weight' has shape (8, 3, 3, 3), the network needs (64, 3, 3, 3)" in err


def test_class_outside_the_classifier(capsys, tmp_path):
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            *SMALL,
            "--mode",
            "untrained",
            "--target",
            "class:10",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "class 10 is outside the classifier, which has classes 0..9" in err


def test_unknown_layer_lists_valid_ones(capsys, tmp_path):
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            *SMALL,
            "--mode",
            "untrained",
            "--target",
            "channel:features.99:0",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "unknown layer 'features.99'" in err and "features.0, features.1" in err


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = error_line(
        capsys,
        [
            "run",
            "--backend",
            "torch",
            *SMALL,
            "--mode",
            "untrained",
            "--target",
            "class:1",
            "--out",
            str(blocker / "out"),
        ],
    )
    assert "cannot create the output folder" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--backend", "torch", "--mode", "untrained", "--out", "{tmp}/o"], "say what to synthesise"),
        (
            ["run", "--backend", "torch", *SMALL, "--mode", "pretrained", "--target", "class:1", "--out", "{tmp}/o"],
            "needs --decoder",
        ),
        (
            ["run", "--backend", "torch", *SMALL, "--mode", "untrained", "--target", "klass:1", "--out", "{tmp}/o"],
            "cannot read 'klass:1'",
        ),
        (
            [
                "run",
                "--backend",
                "torch",
                *SMALL,
                "--mode",
                "untrained",
                "--target",
                "class:1",
                "--batch",
                "0",
                "--out",
                "{tmp}/o",
            ],
            "--batch must be at least 1",
        ),
        (
            [
                "run",
                "--backend",
                "torch",
                *SMALL,
                "--mode",
                "untrained",
                "--target",
                "class:1",
                "--steps",
                "0",
                "--out",
                "{tmp}/o",
            ],
            "steps must be >= 1",
        ),
        (
            [
                "run",
                "--backend",
                "torch",
                "--classifier",
                "no_such_module:f",
                "--mode",
                "untrained",
                "--target",
                "class:1",
                "--out",
                "{tmp}/o",
            ],
            "cannot load classifier factory",
        ),
        (
            [
                "run",
                "--backend",
                "torch",
                "--classifier",
                "vgg16",
                "--mode",
                "untrained",
                "--target",
                "class:1",
                "--out",
                "{tmp}/o",
            ],
            "needs --weights",
        ),
        (["train-decoder", "--images", "{tmp}/none", "--out", "{tmp}/d.pt", *SMALL], "is not a folder"),
    ],
)
def test_bad_input_one_line(capsys, tmp_path, argv, fragment):
    err = error_line(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert fragment in err


def test_decoder_that_does_not_fit(capsys, tmp_path):
    from tests.small_models import write_calibrated_decoder

    path = str(tmp_path / "gray.pt")
    write_calibrated_decoder(path, 28, "L")
    err = error_line(
        capsys,
        ["run", "--backend", "torch", *SMALL, "--decoder", path, "--target", "class:1", "--out", str(tmp_path / "o")],
    )
    assert "makes 1x28x28 images; the classifier takes 3x32x32" in err


def test_other_settings_in_out_folder_refused(capsys, tmp_path):
    base = [
        "run",
        "--backend",
        "torch",
        *SMALL,
        "--mode",
        "untrained",
        "--target",
        "class:1",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert main(base + ["--steps", "2"]) == 0
    err = error_line(capsys, base + ["--steps", "3"])
    assert "holds a run with other settings" in err and "--force" in err
    assert main(base + ["--steps", "3", "--force"]) == 0
