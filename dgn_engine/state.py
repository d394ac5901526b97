"""What one optimisation carries from step to step (numpy only, shared by every backend).

State = the trainable tensors (untrained mode: all of G, alpha included; pretrained mode: alpha
only; pixel mode: the image's spectrum; maco mode: its phase), one optimiser slot per trainable tensor and slot kind
("m."/"u." for AdaMax, "v." for Nesterov, "m."/"v." for Adam), and the step count "t". Every
tensor except t has a leading target axis K.
"""

from __future__ import annotations

import numpy as np

from .plan import GeneratorPlan, phase_shape, spectrum_shape
from .rng import init_generator, init_phase, init_spectrum
from .targets import Target

SLOTS = {"adamax": ("m", "u"), "nesterov": ("v",), "adam": ("m", "v")}
STEP_COUNT = "t"


def trainable_shapes(mode: str, plan: GeneratorPlan) -> dict[str, tuple[int, ...]]:
    if mode == "untrained":
        return plan.param_shapes()
    if mode == "pixel":
        return {"spectrum": spectrum_shape(plan.out_channels, plan.out_size)}
    if mode == "maco":
        return {"phase": phase_shape(plan.out_channels, plan.out_size)}
    return {"alpha": (plan.features,)}


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
    """Untrained mode: a fresh G per target (seeded by seed and target); pretrained: alpha = 1; pixel: a
    small random spectrum per target (seeded likewise)."""
    k = len(targets)
    if mode == "untrained":
        gens = [init_generator(plan, seed, t) for t in targets]
        state = {n: np.stack([g[n] for g in gens]) for n in plan.param_shapes()}
    elif mode == "pixel":
        shape = spectrum_shape(plan.out_channels, plan.out_size)
        state = {"spectrum": np.stack([init_spectrum(shape, seed, t) for t in targets])}
    elif mode == "maco":
        shape = phase_shape(plan.out_channels, plan.out_size)
        state = {"phase": np.stack([init_phase(shape, seed, t) for t in targets])}
    else:
        state = {"alpha": np.ones((k, plan.features), np.float32)}
    for name, shape in state_shapes(mode, plan, optimizer).items():
        if name not in state and name != STEP_COUNT:
            state[name] = np.zeros((k, *shape), np.float32)
    state[STEP_COUNT] = np.zeros((), np.float32)
    return {n: state[n] for n in state_shapes(mode, plan, optimizer)}
