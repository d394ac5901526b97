"""Loss = -sum_k w_k a_k + lambda * sum_{j not targeted} a_j + R, per target (one row each)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..targets import OUTPUT


def objective(
    acts: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], penalty: torch.Tensor, leak=1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(target activation, other-classes penalty), each of shape [K].

    acts[OUTPUT] are D's class logits; every other entry a tapped layer. The penalty reads the
    classes through the final ReLU (the paper's replacement of softmax: pushing another class below
    zero earns nothing); the target's own classes read relu(x) + leak * min(x, 0), so with leak 1 a
    target that starts below zero still has a gradient. penalty[k] is lambda for targets with a
    class term; it applies to the classes with weight 0.
    """
    logits = acts[OUTPUT]
    relu = F.relu(logits)
    reads = {**acts, OUTPUT: relu + leak * torch.clamp(logits, max=0.0)}
    activation = sum((reads[name] * w).flatten(1).sum(1) for name, w in weights.items())
    others = (weights[OUTPUT] == 0).to(logits.dtype)
    return activation, penalty * (relu * others).sum(1)


def regularizer(kind: str, weight: float, alpha: torch.Tensor, final_gamma: torch.Tensor | None) -> torch.Tensor:
    """R per target: eq. 3 (L1 of the last BatchNorm's gamma), eq. 4 (L2 norm of alpha) or the
    original Keras code's sum of squares of alpha."""
    if kind == "l1-final-gamma":
        return weight * final_gamma.abs().sum(-1)
    if kind == "l2-alpha":
        return weight * alpha.square().sum(-1).sqrt()
    if kind == "l2sq-alpha":
        return weight * alpha.square().sum(-1)
    if kind == "none":
        return torch.zeros(alpha.shape[0], dtype=alpha.dtype, device=alpha.device)
    raise ValueError(f"unknown regulariser {kind!r}")
