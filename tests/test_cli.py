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


def vgg16_run(tmp_path, weights) -> list[str]:
    return [
        "run",
        "--backend",
        "torch",
        "--weights",
        str(weights),
        "--mode",
        "untrained",
        "--target",
        "class:1",
        "--out",
        str(tmp_path / "o"),
    ]


def test_missing_weight_file(capsys, tmp_path):
    assert "does not exist" in error_line(capsys, vgg16_run(tmp_path, tmp_path / "nope.pth"))


def test_truncated_weight_file(capsys, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    path.write_bytes(path.read_bytes()[:200])
    assert "cannot be read" in error_line(capsys, vgg16_run(tmp_path, path))


def test_weights_of_another_architecture(capsys, tmp_path):
    from tests.small_models import tiny_rgb

    path = tmp_path / "other.pth"
    torch.save(tiny_rgb().state_dict(), path)
    err = error_line(capsys, vgg16_run(tmp_path, path))
    assert "tensor 'features.0.weight' has shape (8, 3, 3, 3), the network needs (64, 3, 3, 3)" in err


def small_run(target: str, out) -> list[str]:
    return ["run", "--backend", "torch", *SMALL, "--mode", "untrained", "--target", target, "--out", str(out)]


def test_class_outside_the_classifier(capsys, tmp_path):
    err = error_line(capsys, small_run("class:10", tmp_path / "o"))
    assert "class 10 is outside the classifier, which has classes 0..9" in err


def test_unknown_layer_lists_valid_ones(capsys, tmp_path):
    err = error_line(capsys, small_run("channel:features.99:0", tmp_path / "o"))
    assert "unknown layer 'features.99'" in err and "features.0, features.1" in err


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = error_line(capsys, small_run("class:1", blocker / "out"))
    assert "the output folder" in err and "cannot be created" in err and "is a file" in err


TORCH_RUN = ["run", "--backend", "torch"]
SMALL_UNTRAINED = [*TORCH_RUN, *SMALL, "--mode", "untrained", "--out", "{tmp}/o"]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([*TORCH_RUN, "--mode", "untrained", "--out", "{tmp}/o"], "say what to synthesise"),
        ([*TORCH_RUN, *SMALL, "--mode", "pretrained", "--target", "class:1", "--out", "{tmp}/o"], "needs --decoder"),
        ([*SMALL_UNTRAINED, "--target", "klass:1"], "cannot read 'klass:1'"),
        ([*SMALL_UNTRAINED, "--target", "class:1", "--batch", "0"], "argument --batch: must be at least 1"),
        (
            [*SMALL_UNTRAINED, "--target", "class:1", "--steps", "0"],
            "argument --steps: must be between 1 and 1,000,000, got 0",
        ),
        (
            [
                *TORCH_RUN,
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
            [*TORCH_RUN, "--classifier", "vgg16", "--mode", "untrained", "--target", "class:1", "--out", "{tmp}/o"],
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
    assert "holds results made otherwise (steps 2 -> 3)" in err and "--force" in err
    assert main(base + ["--steps", "3", "--force"]) == 0


def test_errors_name_settings_as_the_caller_knows_them(capsys, tmp_path):
    """Below the CLI a message names a setting (errors.setting); the CLI prints its flag, the Python
    API its argument name, from the same raise."""
    from dgn_engine.errors import UsageError, setting
    from dgn_engine.spec import default_spec, with_settings

    e = UsageError(f"{setting('device', 'cuda')}: no GPU; use {setting('device', 'cpu')} or {setting('force', True)}")
    assert str(e) == "device='cuda': no GPU; use device='cpu' or force=True"
    assert e.for_cli({"device": "--device", "force": "--force"}) == "--device cuda: no GPU; use --device cpu or --force"
    with pytest.raises(UsageError, match="needs mode='untrained'"):
        with_settings(default_spec("pretrained"), [], regularizer="l1-final-gamma")
    err = error_line(
        capsys,
        [
            "run",
            "--mode",
            "pretrained",
            "--regularizer",
            "l1-final-gamma",
            "--target",
            "class:1",
            "--out",
            "o",
            "--backend",
            "torch",
        ],
    )
    assert "needs --mode untrained" in err
