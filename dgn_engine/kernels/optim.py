"""The paper's update rules as pure functions (Keras 1 semantics), one call per tensor.

Settings may be tensors, so exported graphs take them as an input instead of baking them in.
"""
from __future__ import annotations

import torch


def adamax(p, g, m, u, t, lr, b1, b2, eps):
    """AdaMax (Kingma & Ba, sec. 7.1). t is the 1-based step number (a tensor)."""
    m = b1 * m + (1 - b1) * g
    u = torch.maximum(b2 * u, g.abs())
    p = p - (lr / (1 - torch.pow(b1, t))) * m / (u + eps)
    return p, m, u


def nesterov(p, g, v, lr, mu):
    """SGD with Nesterov momentum: v <- mu*v - lr*g ; p <- p + mu*v - lr*g."""
    v = mu * v - lr * g
    return p + mu * v - lr * g, v
