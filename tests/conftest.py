import pytest

from tests import small_models


@pytest.fixture
def tiny_classifier():
    from dgn_engine.export.classifiers import load_classifier
    return load_classifier("tests.small_models:tiny_rgb")


@pytest.fixture
def tiny_decoder(tmp_path):
    """A decoder file for the 32 px RGB test classifier (random, BatchNorm calibrated)."""
    path = str(tmp_path / "decoder.pt")
    small_models.write_calibrated_decoder(path, 32, "RGB")
    return path
