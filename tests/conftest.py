import pytest

from tests import small_models


@pytest.fixture
def tiny_classifier():
    from dgn_engine.exporter.classifiers import load_classifier

    return load_classifier("tests.small_models:tiny_rgb")


@pytest.fixture
def tiny_decoder(tmp_path):
    """A decoder file for the 32 px RGB test classifier (random, BatchNorm calibrated)."""
    path = str(tmp_path / "decoder.pt")
    small_models.write_calibrated_decoder(path, 32, "RGB")
    return path


@pytest.fixture(scope="session")
def decoder_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dec") / "decoder.pt")
    small_models.write_calibrated_decoder(path, 32, "RGB")
    return path


def error_line(capsys, argv) -> str:
    """Run the CLI expecting bad input: exit code 2 and exactly one line, no traceback."""
    from dgn_engine.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def export(out, mode, batch, decoder=None, *extra):
    from dgn_engine.artifacts import load_artifacts
    from dgn_engine.cli.main import main

    argv = [
        "export",
        "--classifier",
        "tests.small_models:tiny_rgb",
        "--mode",
        mode,
        "--batch",
        str(batch),
        "--out",
        str(out),
        *extra,
    ]
    if mode == "pretrained":
        argv += ["--decoder", decoder]
    assert main(argv) == 0
    return load_artifacts(str(out))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, decoder_file):
    """Batch-3 artifacts of the tiny classifier with layer features.3 tapped, both modes."""
    root = tmp_path_factory.mktemp("art")
    return {
        mode: export(root / mode, mode, 3, decoder_file, "--taps", "features.3") for mode in ("untrained", "pretrained")
    }
