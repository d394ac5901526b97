"""The paper's update rules as pure functions (Keras 1 semantics), one call per tensor.

Settings may be tensors, so exported graphs take them as an input instead of baking them in.
"""
from __future__ import annotations

import torch


def adamax_step_size(t, lr, b1):
    """lr / (1 - beta1^t): computed once per step, shared by every tensor. t is 1-based."""
    return lr / (1 - torch.pow(b1, t))


def adamax(p, g, m, u, step_size, b1, b2, eps):
    """AdaMax (Kingma & Ba, sec. 7.1)."""
    m = b1 * m + (1 - b1) * g
    u = torch.maximum(b2 * u, g.abs())
    return p - step_size * m / (u + eps), m, u


def nesterov(p, g, v, lr, mu):
    """SGD with Nesterov momentum: v <- mu*v - lr*g ; p <- p + mu*v - lr*g."""
    v = mu * v - lr * g
    return p + mu * v - lr * g, v
