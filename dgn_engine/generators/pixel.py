"""Pixel mode, the classic baseline (lucid / lucent): no G, the image itself, as a Fourier spectrum
scaled by 1/frequency in decorrelated colours squashed by a sigmoid (kernels/pixel.py), with Adam."""

from __future__ import annotations

import numpy as np

from .base import Generator, image_defaults, model_space


class Pixel(Generator):
    name = "pixel"
    has_g = False
    training_api = False

    def defaults(self, image_size):
        # lucid / lucent's: Adam 0.05 and 512 steps
        return image_defaults(0.05, 512)

    def trainable_shapes(self, plan):
        from ..plan import spectrum_shape

        return {"spectrum": spectrum_shape(plan.out_channels, plan.out_size)}

    def initial_trainables(self, plan, seed, targets):
        from ..rng import init_spectrum

        channels, parts, rows, columns = self.trainable_shapes(plan)["spectrum"]
        # drawn as earlier versions stored it, [C, S, S//2+1, 2], then moved: a seed's start is the same
        drawn = [init_spectrum((channels, rows, columns, parts), seed, t) for t in targets]
        return {"spectrum": np.stack([np.moveaxis(d, -1, 1) for d in drawn])}

    def make(self, pp, spec, source):
        from ..plan import pixel_plan

        return pixel_plan(pp.image_size, pp.channels), None

    def image(self, step, params, noise, sigma):
        from ..kernels.pixel import pixel_image

        return model_space(step, pixel_image(params["spectrum"], step.classifier.preprocessing.order))
