"""The backward ops the exporter writes as forward ops, against torch autograd in float64."""

import pytest
import torch

from dgn_engine.kernels.decompositions import convolution_backward, max_pool2d_with_indices_backward


@pytest.mark.parametrize("groups, pad, k, n", [(1, 0, 4, 1), (3, 1, 3, 2), (2, 0, 2, 1), (1, 1, 3, 2)])
def test_convolution_backward(groups, pad, k, n):
    """Input and weight gradients, grouped or not (K generators are one grouped network), any kernel."""
    torch.manual_seed(0)
    x = torch.randn(n, 4 * groups, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5 * groups, 4, k, k, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, None, 1, pad, 1, groups)
    g = torch.randn_like(y)
    y.backward(g)
    grad_in, grad_w, grad_b = convolution_backward(g, x.detach(), w.detach(), None, [1, 1], [pad, pad], [1, 1],
                                                   False, [0, 0], groups, [True, True, True])
    # float64 sums of at most a few hundred products: agreement to rounding
    torch.testing.assert_close(grad_in, x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, w.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_b, g.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_max_pool_backward():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y, idx = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    g = torch.randn_like(y)
    y.backward(g)
    ours = max_pool2d_with_indices_backward(g, x.detach(), [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
    assert torch.equal(ours, x.grad)  # a scatter of distinct positions: exact
