"""The loss of eq. 2 and the update rules, on hand-made numbers."""

import numpy as np
import pytest
import torch

from dgn_engine.kernels.objective import objective, regularizer
from dgn_engine.targets import OUTPUT, objective_weights, parse_target
from dgn_engine.update_rules import adamax, adamax_step_size, nesterov


def test_loss_formula_on_hand_made_activations():
    a = np.array([[0.0, 2.0, 5.0, 1.0], [3.0, 0.0, 4.0, 6.0]])  # ReLU outputs of 4 classes, 2 rows
    layout = {OUTPUT: (4,)}
    w, pen = objective_weights([parse_target("class:2"), parse_target("class:0+0.5*class:3")], layout, 0.01)
    act, penalty = objective(
        {OUTPUT: torch.tensor(a)},
        {OUTPUT: torch.tensor(w[OUTPUT], dtype=torch.float64)},
        torch.tensor(pen, dtype=torch.float64),
    )
    # row 0: -a2 + 0.01 (a0 + a1 + a3) ; row 1: -(a0 + 0.5 a3) + 0.01 (a1 + a2)
    loss = (-act + penalty).numpy()
    np.testing.assert_allclose(loss, [-5 + 0.01 * 3, -(3 + 3) + 0.01 * 4], rtol=1e-6)
    np.testing.assert_allclose(act.numpy(), [5, 6], rtol=1e-6)


def test_other_classes_read_through_relu_and_the_target_leaks_below_zero():
    logits = torch.tensor([[-2.0, 3.0, -1.0]], dtype=torch.float64)
    w, pen = objective_weights([parse_target("class:0")], {OUTPUT: (3,)}, 0.1)
    weights = {OUTPUT: torch.tensor(w[OUTPUT], dtype=torch.float64)}
    pen = torch.tensor(pen, dtype=torch.float64)
    act, penalty = objective({OUTPUT: logits}, weights, pen, leak=1.0)
    assert act.item() == -2.0  # the target's logit itself: it has a gradient
    assert penalty.item() == pytest.approx(0.1 * 3.0)  # class 2 (-1) reads 0 through the ReLU
    strict, _ = objective({OUTPUT: logits}, weights, pen, leak=0.0)
    assert strict.item() == 0.0  # the paper's literal ReLU: a dead target


def test_channel_and_neuron_terms():
    fmap = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    layout = {OUTPUT: (4,), "conv": (3, 2, 2)}
    targets = [parse_target("channel:conv:1"), parse_target("2*neuron:conv:2:1:0")]
    w, pen = objective_weights(targets, layout, 0.01)
    acts = {OUTPUT: torch.zeros(2, 4, dtype=torch.float64), "conv": fmap}
    act, penalty = objective(
        acts, {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}, torch.tensor(pen, dtype=torch.float64)
    )
    np.testing.assert_allclose(act.numpy(), [fmap[0, 1].mean(), 2 * fmap[1, 2, 1, 0]])
    np.testing.assert_array_equal(penalty.numpy(), [0, 0])


def test_regularizers():
    alpha = torch.tensor([[3.0, 4.0]])
    gamma = torch.tensor([[1.0, -2.0, 0.5]])
    assert regularizer("l2-alpha", 0.1, alpha, None).item() == pytest.approx(0.5)  # 0.1 * 5
    assert regularizer("l2sq-alpha", 0.1, alpha, None).item() == pytest.approx(2.5)  # 0.1 * 25
    assert regularizer("l1-final-gamma", 0.01, alpha, gamma).item() == pytest.approx(0.035)
    assert regularizer("none", 0.1, alpha, gamma).item() == 0


def test_adamax_matches_its_definition():
    """In torch (the step graph, the reference) and in numpy (the training-API backend's updates)."""
    p, m, u = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    tp, tm, tu = (torch.tensor(v) for v in (p, m, u))
    np_p, np_m, np_u = p.copy(), m.copy(), u.copy()
    lr, b1, b2, eps = 0.002, 0.9, 0.999, 1e-8
    for t, g in enumerate([np.array([0.5, -2.0]), np.array([-1.0, 0.1]), np.array([0.2, 0.3])], start=1):
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g))
        p = p - lr / (1 - b1**t) * m / (u + eps)
        step_size = adamax_step_size(torch.tensor(float(t), dtype=torch.float64), lr, b1)
        tp, tm, tu = adamax(tp, torch.tensor(g), tm, tu, step_size, b1, b2, eps, torch.maximum)
        np_p, np_m, np_u = adamax(np_p, g, np_m, np_u, adamax_step_size(float(t), lr, b1), b1, b2, eps, np.maximum)
    np.testing.assert_allclose(tp.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(np_p, p, rtol=1e-12)
    # the first step moves every value by lr * sign(g)
    first, _, _ = adamax(
        torch.zeros(2),
        torch.tensor([3.0, -0.1]),
        torch.zeros(2),
        torch.zeros(2),
        adamax_step_size(torch.tensor(1.0), lr, b1),
        b1,
        b2,
        eps,
        torch.maximum,
    )
    np.testing.assert_allclose(first.numpy(), [-lr, lr], rtol=1e-6)


def test_nesterov_matches_torch_sgd():
    """Keras' Nesterov form equals torch.optim.SGD(nesterov=True) for these settings."""
    p0, grads = (
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        [torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0]), torch.tensor([0.3, -0.7])],
    )
    ref = p0.clone().requires_grad_()
    opt = torch.optim.SGD([ref], lr=0.01, momentum=0.1, nesterov=True)
    p, v = p0.clone(), torch.zeros(2, dtype=torch.float64)
    for g in grads:
        ref.grad = g.double()
        opt.step()
        p, v = nesterov(p, g.double(), v, 0.01, 0.1)
    torch.testing.assert_close(p, ref.detach(), rtol=1e-12, atol=1e-12)
