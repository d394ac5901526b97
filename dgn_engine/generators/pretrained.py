"""Pretrained G (the paper's second mode): the decoder of a denoising autoencoder, frozen; only the
feature weights alpha are optimised, with Nesterov SGD."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError, setting
from .base import Generator, feature_vector, into_range


class Pretrained(Generator):
    name = "pretrained"
    paper = True
    option = "decoder"
    option_is = "the pretrained G"

    def defaults(self, image_size):
        from ..spec import Noise, Optimizer, Regularizer

        return dict(
            optimizer=Optimizer("nesterov", 0.01, momentum=0.1),
            noise=Noise("multiplicative", 0.05),
            regularizer=Regularizer("l2-alpha", 0.1),
            steps=1200,
        )

    def trainable_shapes(self, plan):
        return {"alpha": (plan.features,)}

    def initial_trainables(self, plan, seed, targets):
        return {"alpha": np.ones((len(targets), plan.features), np.float32)}

    def make(self, pp, spec, source):
        """`source`: the decoder file's (plan, tensors)."""
        if source is None:
            raise UsageError(
                f"{setting('mode', 'pretrained')} needs {setting('decoder')} (make one with dgn-engine "
                f"train-decoder), or use {setting('mode', 'untrained')}"
            )
        return source

    def image(self, step, params, noise, sigma):
        from ..kernels.generator import frozen_generator, generator_forward

        f = feature_vector(step, params["alpha"], noise, sigma, relu=True)  # the original code's ReLU on alpha
        return into_range(step, generator_forward(step.plan, f, *frozen_generator(step.fixed)))
