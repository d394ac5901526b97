"""Small models for tests: classifiers (module:factory targets for --classifier) and decoders."""

import torch
import torch.nn as nn

from dgn_engine.exporter.autoencoder import save_decoder
from dgn_engine.exporter.generator import Decoder
from dgn_engine.exporter.vgg import vgg_style
from dgn_engine.plan import generator_plan
from dgn_engine.preprocessing import IMAGENET_CAFFE, Preprocessing


def _he(module: nn.Module) -> nn.Module:
    """He initialisation keeps activations at unit scale through depth, like a trained network's."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return module


def tiny_rgb():
    """10 classes, 32x32 RGB, seeded random weights."""
    torch.manual_seed(0)
    m = _he(vgg_style(3, 32, 10, convs=(8, "M", 16, "M", 16, "M"), hidden=(32,)))
    m.preprocessing = Preprocessing(32, "RGB", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return m


def tiny_bgr_caffe():
    """tiny_rgb's layers on Caffe-style input: BGR, the mean subtracted on the 0..255 scale, not scaled
    (mean = m / 255, std = 1 / 255). The first convolution is divided by 0.25 * 255 (tiny_rgb's std in
    those units), as training on that input would, so the activations are tiny_rgb's size."""
    m = tiny_rgb()
    with torch.no_grad():
        m.features[0].weight /= 0.25 * 255
    m.preprocessing = Preprocessing(32, "BGR", IMAGENET_CAFFE.mean, IMAGENET_CAFFE.std)
    return m


def tiny_gray():
    """10 classes, 28x28 grayscale, seeded random weights."""
    torch.manual_seed(99)
    m = _he(vgg_style(1, 28, 10, convs=(8, "M", 16, "M"), hidden=(32,)))
    m.preprocessing = Preprocessing(28, "L", (0.5,), (0.5,))
    return m


def calibrated_decoder(size: int, order: str, seed: int = 0) -> Decoder:
    """A random decoder whose BatchNorm statistics are those of its own activations, so that, as in
    a trained decoder, every layer passes a unit-scale signal."""
    torch.manual_seed(seed)
    channels = 1 if order == "L" else 3
    dec = Decoder(generator_plan("decoder", size, channels, size / 224))
    for bn in dec.bns:
        bn.momentum = 1.0
    dec.train()
    with torch.no_grad():
        dec(torch.relu(1 + 0.5 * torch.randn(64, dec.plan.features)))
    return dec.eval()


def write_calibrated_decoder(path: str, size: int, order: str) -> None:
    n = 1 if order == "L" else 3
    save_decoder(
        path,
        calibrated_decoder(size, order),
        Preprocessing(size, order, (0.5,) * n, (0.25,) * n),
        {"note": "test decoder: random, BatchNorm calibrated"},
    )
