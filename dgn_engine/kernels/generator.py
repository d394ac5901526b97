"""G's layers in torch, run from a plan (dgn_engine.plan) out of ONNX-friendly layers.

`generator_forward` is functional so that one code path serves every use: K independent
generators as one grouped-convolution network (untrained mode, BatchNorm per generator), one shared
frozen decoder applied to K feature rows (pretrained mode), and the decoder module trained inside
the denoising autoencoder.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..plan import BN_EPS, GeneratorPlan
from .layers import batch_norm_eval, batch_norm_train, conv2d, upsample2x

ConvParam = Callable[[int, str], torch.Tensor]  # (conv index, "weight" | "bias") -> tensor
Norm = Callable[[int, torch.Tensor], torch.Tensor]  # (conv index, x) -> BatchNorm(x)


def generator_forward(
    plan: GeneratorPlan, feature: torch.Tensor, conv_param: ConvParam, norm: Norm, groups: int = 1
) -> torch.Tensor:
    """feature [K, F] -> image [K, C, H, W]; with groups = K each row has its own generator."""
    k = feature.shape[0]
    x = feature.reshape(k // groups, groups * plan.feature_channels, plan.feature_size, plan.feature_size)
    i = 0
    for layer in plan.layers:
        if layer == "up":
            x = upsample2x(x)
            continue
        x = conv2d(x, conv_param(i, "weight"), conv_param(i, "bias"), layer.pads, groups)
        if layer.relu:
            x = F.relu(x)
        if layer.bn:
            x = norm(i, x)
        i += 1
    size = plan.out_size
    if size != plan.grown_size:
        x = x[:, :, :size, :size]
    return x.reshape(k, plan.out_channels, size, size)


def stacked_generator(plan: GeneratorPlan, params: dict[str, torch.Tensor]):
    """conv_param and norm for K generators whose tensors are stacked [K, ...] (train-mode BN)."""

    def conv_param(i, what):
        t = params[f"conv{i}.{what}"]
        return t.reshape(-1, *t.shape[2:])

    def norm(i, x):
        return batch_norm_train(x, params[f"bn{i}.weight"].reshape(-1), params[f"bn{i}.bias"].reshape(-1), BN_EPS)

    return conv_param, norm


def frozen_generator(tensors: dict[str, torch.Tensor]):
    """conv_param and norm for one shared generator with BatchNorm on its running statistics."""

    def conv_param(i, what):
        return tensors[f"conv{i}.{what}"]

    def norm(i, x):
        return batch_norm_eval(
            x,
            tensors[f"bn{i}.weight"],
            tensors[f"bn{i}.bias"],
            tensors[f"bn{i}.running_mean"],
            tensors[f"bn{i}.running_var"],
            BN_EPS,
        )

    return conv_param, norm
