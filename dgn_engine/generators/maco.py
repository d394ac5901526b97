"""maco mode, magnitude-constrained optimisation (Fel et al., NeurIPS 2023): no G; only the phase of an
image whose Fourier magnitude is fixed (the mean of a photo folder's, else a 1/f power law), with Adam."""

from __future__ import annotations

import numpy as np

from .base import Generator, image_defaults, model_space


class Maco(Generator):
    name = "maco"
    has_g = False
    training_api = False
    option = "spectrum"
    option_is = "maco mode's fixed Fourier magnitude"

    def defaults(self, image_size):
        # MACO's: Adam on the phase (scale-free: it is standardised) and 256 steps; one transformed view
        # per step where MACO averages many random crops
        return image_defaults(1.0, 256)

    def trainable_shapes(self, plan):
        from ..plan import phase_shape

        return {"phase": phase_shape(plan.out_channels, plan.out_size)}

    def initial_trainables(self, plan, seed, targets):
        from ..rng import init_phase

        shape = self.trainable_shapes(plan)["phase"]
        return {"phase": np.stack([init_phase(shape, seed, t) for t in targets])}

    def make(self, pp, spec, source):
        """`source`: the photos' mean magnitude [C, S, S//2+1] (None: the 1/f power law)."""
        from ..kernels.maco import power_law_magnitude
        from ..plan import pixel_plan

        magnitude = source if source is not None else power_law_magnitude(pp.channels, pp.image_size)
        return pixel_plan(pp.image_size, pp.channels), magnitude

    def image(self, step, params, noise, sigma):
        from ..kernels.maco import maco_image

        phase = params["phase"]
        order = step.classifier.preprocessing.order
        return model_space(step, maco_image(phase, phase.new_tensor(step.fixed), order))
