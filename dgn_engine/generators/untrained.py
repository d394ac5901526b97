"""Untrained G (the paper's first mode): a fresh generator per target, all of it optimised with AdaMax."""

from __future__ import annotations

import numpy as np

from .base import Generator, feature_vector, into_range

# Below 224 px: the paper's sigma 2 and lr 0.002 are made for its 5.2M-value G. Measured on three
# trained 32 px classifiers (VGG-style, ResNet, MLP; 10 classes each), these reach D's top-1 for 10/10
# classes on each, the paper's for 4, 5 and 7 of 10; judges: 45 % against 20 % top-1.
SMALL_G_UNTRAINED = {"sigma": 0.5, "lr": 0.01, "steps": 1000}
# From 224 px (ImageNet classifiers): measured on EfficientNet-Lite1 as D with Lite0 judging
# (bench/RESULTS.md). The paper's G there makes colour blobs that no net recognises: its final ReLU
# flattens half the image, its noise (sigma 2, or 0.5 falling to 0) slows the search, and it sees no
# transforms. A linear head into decorrelated colours and a sigmoid, no noise, AdaMax 0.05, the standard
# transforms, a G of 3/16 of the paper's widths (plan.untrained_width), 500 steps and the best snapshot
# written.
LARGE_G_UNTRAINED = {"sigma": 0.0, "lr": 0.05, "steps": 500}


class Untrained(Generator):
    name = "untrained"
    trains_g = True
    paper = True
    option = "g_width"
    option_is = "the untrained G's width scale"
    sqrt_original = True

    def defaults(self, image_size):
        from ..spec import PAPER_IMAGE_SIZE, TRANSFORM_PRESETS, Noise, Optimizer, Regularizer, Snapshots

        found = dict(
            optimizer=Optimizer("adamax", 0.002, 0.9, 0.999, 1e-8),
            noise=Noise("additive", 2.0),
            regularizer=Regularizer("l1-final-gamma", 0.01),
            steps=500,
        )
        if image_size is None:
            return found
        sized = SMALL_G_UNTRAINED if image_size < PAPER_IMAGE_SIZE else LARGE_G_UNTRAINED
        found.update(
            noise=Noise("additive", sized["sigma"]),
            optimizer=Optimizer("adamax", sized["lr"], 0.9, 0.999, 1e-8),
            steps=sized["steps"],
        )
        if image_size >= PAPER_IMAGE_SIZE:
            found.update(
                image_range="sigmoid", transforms=TRANSFORM_PRESETS["standard"], snapshots=Snapshots(pick="best")
            )
        return found

    def trainable_shapes(self, plan):
        return plan.param_shapes()

    def initial_trainables(self, plan, seed, targets):
        from ..rng import init_generator

        gens = [init_generator(plan, seed, t) for t in targets]
        return {n: np.stack([g[n] for g in gens]) for n in plan.param_shapes()}

    def make(self, pp, spec, source):
        """`source`: G's width scale (None: plan.untrained_width for D's size)."""
        from ..plan import generator_plan, untrained_width

        width = source or untrained_width(pp.image_size, spec.image_range)
        linear = spec.image_range == "sigmoid"
        return generator_plan("untrained", pp.image_size, pp.channels, width, linear), None

    def image(self, step, params, noise, sigma):
        from ..kernels.generator import generator_forward, stacked_generator

        f = feature_vector(step, params["alpha"], noise, sigma, relu=False)
        image = generator_forward(step.plan, f, *stacked_generator(step.plan, params), groups=f.shape[0])
        return into_range(step, image)
