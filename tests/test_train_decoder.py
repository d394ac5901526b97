"""train-decoder: the paper's denoising autoencoder on real image files, resumable per epoch."""

import numpy as np
import torch
from PIL import Image

from dgn_engine.cli.main import main
from dgn_engine.exporter.autoencoder import load_decoder
from dgn_engine.exporter.classifiers import load_classifier


def make_images(folder, n=40, size=40):
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(4, 12)]
        img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 80, 3, dtype=np.uint8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(120, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")


def test_train_decoder_resumes_and_fits_the_classifier(tmp_path, capsys):
    make_images(tmp_path / "imgs")
    out = str(tmp_path / "decoder.pt")
    argv = [
        "train-decoder",
        "--images",
        str(tmp_path / "imgs"),
        "--out",
        out,
        "--classifier",
        "tests.small_models:tiny_rgb",
        "--batch",
        "8",
        "--threads",
        "2",
    ]
    assert main(argv + ["--epochs", "1"]) == 0
    plan, tensors, training = load_decoder(out)
    assert training["epochs"] == 1 and training["heldout_images"] == 4
    first = training["history"][0]
    capsys.readouterr()
    assert main(argv + ["--epochs", "3"]) == 0  # resumes after epoch 1 instead of starting over
    assert "resuming" in capsys.readouterr().out
    plan, tensors, training = load_decoder(out, load_classifier("tests.small_models:tiny_rgb").preprocessing)
    assert training["epochs"] == 3 and training["history"][0] == first
    assert training["history"][-1]["train_mse"] < first["train_mse"]
    assert np.isfinite(training["history"][-1]["val_mse"])
    assert (plan.out_size, plan.out_channels) == (32, 3)
    assert all(torch.isfinite(t).all() for t in tensors.values())
