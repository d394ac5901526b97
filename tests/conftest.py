import os

import pytest

from tests import small_models


def pytest_configure(config):
    """Each xdist worker on cores of its own: with torch and onnxruntime each spreading over every core,
    two workers on two cores oversubscribe them (a 3 s torch test took 30 s beside an export)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index, workers = int(worker.removeprefix("gw")), int(count)
    if workers > 1 and len(cores) >= workers:
        share = len(cores) // workers
        os.sched_setaffinity(0, cores[index * share : (index + 1) * share])
        import torch

        torch.set_num_threads(share)


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


# DGN_ENGINE_EXPECT_SKIPS="tests/test_ray.py=0,tests/test_training_api.py=1": where CI installed a
# backend's suite, more skips in that file than expected fail the session (a broken backend must not
# pass as "not installed").
_EXPECTED = dict(
    (f.strip(), int(n))
    for f, _, n in (e.rpartition("=") for e in os.environ.get("DGN_ENGINE_EXPECT_SKIPS", "").split(","))
    if f
)
_skipped: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if report.skipped and path in _EXPECTED:
        _skipped.setdefault(path, []).append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    over = {p: ids for p, ids in _skipped.items() if len(ids) > _EXPECTED[p]}
    if over:
        for path, ids in over.items():
            print(f"\n{path}: {len(ids)} tests skipped, {_EXPECTED[path]} expected: {ids[:5]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
