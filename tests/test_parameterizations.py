"""Modes are names of parameterisations (generators/): each owns its defaults, trainables, start, plan and
image, and a new one is one module plus its registration, served by every path (CLI, torch reference,
export, engine, records)."""

import json

import numpy as np
import pytest
from PIL import Image

from dgn_engine.cli.common import add_method_options
from dgn_engine.cli.main import main, parser
from dgn_engine.generators import REGISTRY, Generator, generator, option_problem
from dgn_engine.generators.base import model_space
from dgn_engine.plan import pixel_plan
from dgn_engine.spec import default_spec, paper_spec
from dgn_engine.state import initial_state, state_shapes
from dgn_engine.targets import parse_target

TARGETS = [parse_target("class:1"), parse_target("class:2")]


@pytest.mark.parametrize("mode", list(REGISTRY))
def test_each_mode_owns_its_defaults_trainables_and_start(mode):
    gen = generator(mode)
    spec = default_spec(mode, image_size=32)  # its defaults are a valid spec
    plan = pixel_plan(32, 3) if not gen.has_g else None
    if plan is None:
        from dgn_engine.plan import generator_plan

        plan = generator_plan("untrained" if mode == "untrained" else "decoder", 32, 3, 0.25)
    shapes = gen.trainable_shapes(plan)
    start = gen.initial_trainables(plan, 0, TARGETS)
    assert list(start) == list(shapes) and all(start[n].shape == (2, *s) for n, s in shapes.items())
    state = initial_state(mode, plan, spec.optimizer.name, 0, TARGETS)
    assert list(state) == list(state_shapes(mode, plan, spec.optimizer.name))
    assert (paper_spec(mode).mode == mode) if gen.paper else True


def test_the_command_line_and_the_records_follow_the_registry():
    mode_option = next(a for a in parser()._subparsers._group_actions[0].choices["run"]._actions if a.dest == "mode")
    assert tuple(mode_option.choices) == tuple(REGISTRY)
    assert add_method_options  # the options are built from the registry each time a parser is made
    assert (
        option_problem("pixel", "decoder") == "\x00decoder\x00 is the pretrained G; pixel mode has no G: leave it out"
    )
    assert option_problem("maco", "spectrum") is None


class Direct(Generator):
    """A parameterisation a user might add: the raw pixels through a sigmoid, nothing else."""

    name = "direct"
    has_g = False
    training_api = False

    def defaults(self, image_size):
        from dgn_engine.spec import Noise, Optimizer, Regularizer

        return dict(
            optimizer=Optimizer("adam", 0.1, 0.9, 0.999, 1e-8),
            noise=Noise("none", 0.0),
            regularizer=Regularizer("none", 0.0),
            steps=6,
        )

    def trainable_shapes(self, plan):
        return {"pixels": (plan.out_channels, plan.out_size, plan.out_size)}

    def initial_trainables(self, plan, seed, targets):
        from dgn_engine.rng import init_phase  # N(0, 1), seeded by the seed and the target

        shape = self.trainable_shapes(plan)["pixels"]
        return {"pixels": np.stack([0.5 * init_phase(shape, seed, t) for t in targets])}

    def make(self, pp, spec, source):
        return pixel_plan(pp.image_size, pp.channels), None

    def image(self, step, params, noise, sigma):
        import torch

        return model_space(step, torch.sigmoid(params["pixels"]))


@pytest.mark.slow  # an export: 8 s
def test_a_new_parameterisation_is_one_class_and_its_registration(tmp_path, monkeypatch):
    """Registered, `--mode direct` runs on the torch reference and on its exported step graph in
    onnxruntime, and both write the same images (float32 rounding: at most one level of a PNG)."""
    monkeypatch.setitem(REGISTRY, "direct", Direct())
    common = ["--classifier", "tests.small_models:tiny_rgb", "--mode", "direct", "--quiet"]
    targets = ["--target", "class:1", "--target", "class:2"]
    assert main(["run", "--backend", "torch", *common, *targets, "--out", str(tmp_path / "eager")]) == 0
    art = tmp_path / "art"
    assert main(["export", *common[:-1], "--batch", "2", "--out", str(art)]) == 0
    assert json.loads((art / "manifest.json").read_text())["mode"] == "direct"
    assert main(["run", "--artifacts", str(art), *targets, "--out", str(tmp_path / "graph"), "--quiet"]) == 0
    for name in ("class-1", "class-2"):
        eager, graph = (
            np.asarray(Image.open(tmp_path / o / "targets" / f"{name}.png"), int) for o in ("eager", "graph")
        )
        assert np.abs(eager - graph).max() <= 1 and eager.std() > 0  # the search moved the pixels
        record = json.loads((tmp_path / "graph" / "targets" / f"{name}.json").read_text())
        assert record["mode"] == "direct" and record["steps"] == 6  # its own defaults
