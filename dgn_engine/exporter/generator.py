"""The pretrained G as a torch module: the decoder trained inside the denoising autoencoder, run by the
functional generator of kernels/generator.py."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.generator import generator_forward
from ..plan import BN_EPS, GeneratorPlan


class Decoder(nn.Module):
    """The pretrained G: a trainable module (inside the autoencoder) whose state dict uses the
    plan's tensor names, so it loads straight into `frozen_generator`."""

    def __init__(self, plan: GeneratorPlan):
        super().__init__()
        if plan.has_alpha:
            raise ValueError("a decoder plan has no alpha")
        self.plan = plan
        self.convs = nn.ModuleList(nn.Conv2d(c.cin, c.cout, c.k) for c in plan.convs())
        # Keras momentum 0.99 is torch momentum 0.01
        self.bns = nn.ModuleList(nn.BatchNorm2d(c.cout, eps=BN_EPS, momentum=0.01) for c in plan.convs())

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        def conv_param(i, what):
            return getattr(self.convs[i], what)

        def norm(i, x):
            bn = self.bns[i]
            return F.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, self.training, bn.momentum, bn.eps
            )

        return generator_forward(self.plan, feature, conv_param, norm)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Plan-named tensors: conv{i}.weight/bias, bn{i}.weight/bias/running_mean/running_var."""
        out = {}
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            out[f"conv{i}.weight"], out[f"conv{i}.bias"] = conv.weight, conv.bias
            for what in ("weight", "bias", "running_mean", "running_var"):
                out[f"bn{i}.{what}"] = getattr(bn, what)
        return {k: v.detach() for k, v in out.items()}
