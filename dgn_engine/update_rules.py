"""The paper's update rules (Keras 1 semantics) as plain arithmetic, one call per tensor.

The same code updates torch tensors (traced into the step graph, run by the torch reference) and
numpy arrays (the training-API backend applies its own updates); `maximum` is the elementwise max
of the array library in use. Settings may be tensors, so graphs take them as an input.
"""

from __future__ import annotations


def adamax_step_size(t, lr, b1):
    """lr / (1 - beta1^t): computed once per step, shared by every tensor. t is 1-based."""
    return lr / (1 - b1**t)


def adamax(p, g, m, u, step_size, b1, b2, eps, maximum):
    """AdaMax (Kingma & Ba, sec. 7.1)."""
    m = b1 * m + (1 - b1) * g
    u = maximum(b2 * u, abs(g))
    return adamax_move(p, m, u, step_size, eps), m, u


def adamax_move(p, m, u, step_size, eps):
    """The parameters after AdaMax's step, from the new moments."""
    return p - step_size * m / (u + eps)


def nesterov(p, g, v, lr, mu):
    """SGD with Nesterov momentum: v <- mu*v - lr*g ; p <- p + mu*v - lr*g."""
    v = mu * v - lr * g
    return p + mu * v - lr * g, v


def adam(p, g, m, v, t, lr, b1, b2, eps, sqrt):
    """Adam (Kingma & Ba, algorithm 1, with eps added to the bias-corrected root as torch does);
    `sqrt` is the elementwise root of the array library in use."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return adam_move(p, m, v, t, lr, b1, b2, eps, sqrt), m, v


def adam_move(p, m, v, t, lr, b1, b2, eps, sqrt):
    """The parameters after Adam's step t (1-based), from the new moments."""
    return p - (lr / (1 - b1**t)) * m / (sqrt(v / (1 - b2**t)) + eps)
