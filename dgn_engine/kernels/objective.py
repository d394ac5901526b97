"""Loss = -sum_k w_k a_k + lambda * sum_{j not targeted} a_j + R, per target (one row each)."""
from __future__ import annotations

import torch

from ..targets import OUTPUT


def objective(acts: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
              penalty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target activation, other-classes penalty), each of shape [K].

    acts[OUTPUT] are D's class outputs after the final ReLU; every other entry a tapped layer.
    penalty[k] is lambda for targets with a class term; it applies to the classes with weight 0.
    """
    activation = sum((acts[name] * w).flatten(1).sum(1) for name, w in weights.items())
    others = (weights[OUTPUT] == 0).to(acts[OUTPUT].dtype)
    return activation, penalty * (acts[OUTPUT] * others).sum(1)


def regularizer(kind: str, weight: float, alpha: torch.Tensor, final_gamma: torch.Tensor | None
                ) -> torch.Tensor:
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
