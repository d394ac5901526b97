"""What one optimisation carries from step to step (numpy only, shared by every backend).

State = the trainable tensors (untrained mode: all of G, alpha included; pretrained mode: alpha
only; pixel mode: the image's spectrum; maco mode: its phase), one optimiser slot per trainable tensor and slot kind
("m."/"u." for AdaMax, "v." for Nesterov, "m."/"v." for Adam), and the step count "t". Every
tensor except t has a leading target axis K.
"""

from __future__ import annotations

import numpy as np

from .generators import generator
from .plan import GeneratorPlan
from .targets import Target

SLOTS = {"adamax": ("m", "u"), "nesterov": ("v",), "adam": ("m", "v")}
STEP_COUNT = "t"


def trainable_shapes(mode: str, plan: GeneratorPlan) -> dict[str, tuple[int, ...]]:
    return generator(mode).trainable_shapes(plan)


def state_shapes(mode: str, plan: GeneratorPlan, optimizer: str) -> dict[str, tuple[int, ...]]:
    """Per-target shapes, in the fixed order every backend and graph uses; t is a scalar."""
    trainables = trainable_shapes(mode, plan)
    shapes = dict(trainables)
    for slot in SLOTS[optimizer]:
        shapes.update({f"{slot}.{n}": s for n, s in trainables.items()})
    shapes[STEP_COUNT] = ()
    return shapes


def initial_state(
    mode: str, plan: GeneratorPlan, optimizer: str, seed: int, targets: list[Target]
) -> dict[str, np.ndarray]:
    """The mode's trainables at their start (generators/: a fresh G per target in untrained mode, alpha = 1
    in pretrained mode, ...) and zeroed optimiser slots."""
    k = len(targets)
    state = generator(mode).initial_trainables(plan, seed, targets)
    for name, shape in state_shapes(mode, plan, optimizer).items():
        if name not in state and name != STEP_COUNT:
            state[name] = np.zeros((k, *shape), np.float32)
    state[STEP_COUNT] = np.zeros((), np.float32)
    return {n: state[n] for n in state_shapes(mode, plan, optimizer)}
