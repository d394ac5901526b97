"""The backward ops the exporter writes as forward ops, against torch autograd in float64.

Each case draws random shapes (odd sizes included) and compares our decomposition with the
gradient autograd computes for the same forward op. All are float64 sums of at most a few thousand
products, so agreement is to rounding: 1e-10.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from dgn_engine.kernels import decompositions as dec

TOL = dict(rtol=1e-10, atol=1e-10)
f64 = dict(dtype=torch.float64)


def _autograd(fn, x, *params):
    x = x.clone().requires_grad_(True)
    params = [p.clone().requires_grad_(True) for p in params]
    y = fn(x, *params)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *params], g)
    return y, g, grads


CONV_CASES = [  # groups, kernel, stride, padding, dilation, size, channels per group (in, out)
    (1, 4, 1, 0, 1, 9, (4, 5)),
    (3, 3, 1, 1, 1, 9, (4, 5)),
    (2, 2, 1, 0, 1, 8, (4, 5)),
    (1, 3, 2, 1, 1, 11, (3, 6)),  # ResNet downsampling
    (1, 7, 2, 3, 1, 17, (3, 8)),  # ResNet stem, odd size
    (1, 1, 2, 0, 1, 10, (4, 6)),  # strided 1x1 shortcut: rows no window reaches
    (6, 3, 2, 1, 1, 13, (1, 1)),  # depthwise stride 2
    (6, 5, 2, 0, 1, 12, (1, 1)),  # depthwise stride 2, TF-style padding outside the convolution (EfficientNet)
    (4, 1, 3, 0, 1, 10, (1, 2)),  # grouped, strided past the last rows: the stuffed gradient is cropped
    (4, 3, 2, 3, 1, 12, (1, 1)),  # grouped, strided, padded beyond the kernel: the transposed convolution
    (8, 5, 1, 2, 1, 9, (1, 2)),  # depthwise with a channel multiplier
    (1, 3, 1, 2, 2, 12, (4, 4)),  # dilated
    (2, 3, 3, 2, 2, 16, (2, 3)),  # strided, dilated and grouped at once
    (1, 1, 1, 1, 1, 7, (2, 3)),  # padding beyond the kernel
    (1, (3, 5), (2, 1), (1, 2), (1, 2), 11, (3, 4)),  # rectangular everything
]


@pytest.mark.parametrize("groups, k, stride, pad, dil, size, ch", CONV_CASES)
def test_convolution_backward(groups, k, stride, pad, dil, size, ch):
    torch.manual_seed(0)
    k2 = k if isinstance(k, tuple) else (k, k)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    x = torch.randn(2, ch[0] * groups, size, size + 1, **f64)
    w = torch.randn(ch[1] * groups, ch[0], *k2, **f64)
    _, g, (gx, gw) = _autograd(lambda x, w: F.conv2d(x, w, None, stride, pad, dil, groups), x, w)
    ours = dec.convolution_backward(
        g, x, w, None, pair(stride), pair(pad), pair(dil), False, [0, 0], groups, [True, True, True]
    )
    torch.testing.assert_close(ours[0], gx, **TOL)
    torch.testing.assert_close(ours[1], gw, **TOL)
    torch.testing.assert_close(ours[2], g.sum((0, 2, 3)), **TOL)


@pytest.mark.parametrize(
    "groups, k, stride, pad, dil, out_pad",
    [(1, 4, 2, 1, 1, 0), (2, 3, 2, 1, 1, 1), (1, 3, 3, 0, 2, 2), (4, 3, 1, 1, 1, 0)],
)
def test_transposed_convolution_backward(groups, k, stride, pad, dil, out_pad):
    torch.manual_seed(1)
    x = torch.randn(2, 2 * groups, 7, 6, **f64)
    w = torch.randn(2 * groups, 3, k, k, **f64)
    _, g, (gx, gw) = _autograd(lambda x, w: F.conv_transpose2d(x, w, None, stride, pad, out_pad, groups, dil), x, w)
    ours = dec.convolution_backward(
        g, x, w, None, [stride] * 2, [pad] * 2, [dil] * 2, True, [out_pad] * 2, groups, [True, True, False]
    )
    torch.testing.assert_close(ours[0], gx, **TOL)
    torch.testing.assert_close(ours[1], gw, **TOL)


WEIGHT_GRADIENT_PATHS = [dec.weight_grad_matmul, dec.weight_grad_conv, dec.weight_grad_shifted]


@pytest.mark.parametrize(
    "path, groups, k, stride, pad, dil, size, ch",
    [
        pytest.param(path, *case, id=f"{path.__name__}-{i}")
        for path in WEIGHT_GRADIENT_PATHS
        for i, case in enumerate(CONV_CASES)
        if path is not dec.weight_grad_shifted or case[2] == 1  # the shifted products serve stride 1 only
    ],
)
def test_every_weight_gradient_path(path, groups, k, stride, pad, dil, size, ch):
    """Each path on every case it serves, whichever the dispatcher would pick for its channel count."""
    torch.manual_seed(3)
    k2 = k if isinstance(k, tuple) else (k, k)
    pair = lambda v: tuple(v) if isinstance(v, tuple) else (v, v)  # noqa: E731
    x = torch.randn(2, ch[0] * groups, size, size + 1, **f64)
    w = torch.randn(ch[1] * groups, ch[0], *k2, **f64)
    _, g, (_, gw) = _autograd(lambda x, w: F.conv2d(x, w, None, stride, pad, dil, groups), x, w)
    torch.testing.assert_close(path(x, g, k2, pair(stride), pair(pad), pair(dil), groups), gw, **TOL)


@pytest.mark.parametrize("path", WEIGHT_GRADIENT_PATHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("batch, transposed, dims", [(1, False, 2), (3, False, 2), (2, True, 2), (2, False, 1)])
def test_weight_gradient_paths_batch_transposed_and_1d(path, batch, transposed, dims):
    """A batch of one (the untrained G's layout: one image per target, targets as groups) and of
    several, a transposed convolution (input and output gradient swap roles) and a 1-d convolution."""
    torch.manual_seed(4)
    stride = (1 if path is dec.weight_grad_shifted else 2,) * dims
    size, groups, pad, dil, k = [9, 8][:dims], 2, (1,) * dims, (1,) * dims, (3,) * dims
    x = torch.randn(batch, 8 * groups, *size, **f64)
    conv = (F.conv_transpose1d, F.conv_transpose2d)[dims - 1] if transposed else (F.conv1d, F.conv2d)[dims - 1]
    w = torch.randn(8 * groups, 8, *k, **f64) if transposed else torch.randn(10 * groups, 8, *k, **f64)
    if transposed:
        fn = lambda x, w: conv(x, w, None, stride, pad, stride[0] - 1, groups, dil)  # noqa: E731
    else:
        fn = lambda x, w: conv(x, w, None, stride, pad, dil, groups)  # noqa: E731
    _, g, (_, gw) = _autograd(fn, x, w)
    ours = path(g, x, k, stride, pad, dil, groups) if transposed else path(x, g, k, stride, pad, dil, groups)
    torch.testing.assert_close(ours, gw, **TOL)


@pytest.mark.parametrize(
    "ch, k, pad, dil, groups, batch, dims",
    [
        ((4, 2), (3, 3), (0, 0), (1, 1), 1, 1, 2),  # an RGB-like head: the output gradient is sliced
        ((2, 4), (3, 3), (0, 0), (1, 1), 1, 1, 2),  # widening: the input is sliced
        ((6, 2), (3, 5), (1, 2), (2, 1), 3, 2, 2),  # thin output, padded, dilated, grouped, a batch
        ((2, 6), (4, 2), (2, 1), (1, 2), 2, 2, 2),  # thin input, the same
        ((5, 2), (3,), (2,), (2,), 1, 2, 1),  # 1-d
        ((2, 3), (2, 3, 2), (1, 0, 1), (1, 1, 1), 1, 1, 3),  # 3-d
    ],
)
def test_shifted_products_slice_the_thinner_tensor(ch, k, pad, dil, groups, batch, dims):
    """The shifted products against autograd, on both of its branches: the slices it copies are of the
    tensor with fewer channels, and each is one contiguous range of the flattened pixels."""
    torch.manual_seed(5)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    x = torch.randn(batch, ch[0] * groups, *[9, 8, 7][:dims], **f64)
    w = torch.randn(ch[1] * groups, ch[0], *k, **f64)
    _, g, (_, gw) = _autograd(lambda x, w: conv(x, w, None, 1, pad, dil, groups), x, w)
    fn = lambda x, g: dec.weight_grad_shifted(x, g, k, (1,) * dims, pad, dil, groups)  # noqa: E731
    torch.testing.assert_close(fn(x, g), gw, **TOL)
    graph = make_fx(fn)(x, g).graph
    slices = [n for n in graph.nodes if n.target == torch.ops.aten.slice.Tensor and n.args[0].meta["val"].dim() == 3]
    per_offset = [n for n in slices if n.args[1] == 2 and n.args[0].meta["val"].shape[1] == min(ch)]
    assert len(per_offset) == math.prod(k)  # one contiguous slice per kernel offset, of the thinner tensor


def test_shifted_products_refuse_a_stride():
    x, g = torch.randn(1, 4, 9, 9, **f64), torch.randn(1, 2, 4, 4, **f64)
    with pytest.raises(ValueError, match="stride-1 convolutions only"):
        dec.weight_grad_shifted(x, g, (3, 3), (2, 2), (0, 0), (1, 1), 1)


def test_the_dispatcher_takes_products_for_enough_channels_and_work(monkeypatch):
    def traced_ops(cin, groups):
        x, g = torch.randn(1, cin, 6, 6, **f64), torch.randn(1, 4, 4, 4, **f64)
        fn = lambda a, b: dec._weight_grad(a, b, (3, 3), (1, 1), (0, 0), (1, 1), groups)  # noqa: E731
        graph = make_fx(fn)(x, g).graph
        return " ".join(str(n.target) for n in graph.nodes if n.op == "call_function")

    assert "convolution" in traced_ops(16, 2)  # 2 * 16 * 4 * 16 * 9 / 2 = 9,216 FLOPs: too little work
    monkeypatch.setattr(dec, "MATMUL_MIN_FLOPS", 9216)
    assert "convolution" not in traced_ops(16, 2) and "bmm" in traced_ops(16, 2)  # 8 channels per group
    assert "convolution" in traced_ops(16, 4)  # 4 per group


@pytest.mark.parametrize(
    "groups, pad, transposed", [(6, 1, False), (1, 1, True), (6, 3, True)], ids=["grouped", "dense", "over-padded"]
)
def test_strided_input_gradients_are_stride_one_convolutions_where_grouped(groups, pad, transposed):
    """A grouped (depthwise) strided convolution's input gradient convolves the zero-stuffed output
    gradient; a dense one, or one padded beyond the kernel's reach, stays a transposed convolution."""
    x, w = torch.randn(2, 6, 12, 12, **f64), torch.randn(6, 6 // groups, 3, 3, **f64)
    g = torch.randn_like(F.conv2d(x, w, None, 2, pad, 1, groups))
    fn = lambda g, x, w: dec.convolution_backward(  # noqa: E731
        g, x, w, None, [2, 2], [pad, pad], [1, 1], False, [0, 0], groups, [True, False, False]
    )[0]
    calls = [n for n in make_fx(fn)(g, x, w).graph.nodes if n.target == torch.ops.aten.convolution.default]
    assert [c.args[6] for c in calls] == [transposed]


def test_convolution_backward_1d():
    torch.manual_seed(2)
    x, w = torch.randn(2, 6, 15, **f64), torch.randn(9, 2, 3, **f64)
    _, g, (gx, gw) = _autograd(lambda x, w: F.conv1d(x, w, None, 2, 1, 2, 3), x, w)
    ours = dec.convolution_backward(g, x, w, None, [2], [1], [2], False, [0], 3, [True, True, False])
    torch.testing.assert_close(ours[0], gx, **TOL)
    torch.testing.assert_close(ours[1], gw, **TOL)


@pytest.mark.parametrize(
    "k, stride, pad, dil, ceil, size",
    [
        (2, 2, 0, 1, False, 8),
        (3, 2, 1, 1, False, 9),
        (3, 2, 0, 1, True, 10),
        (3, 2, 1, 2, True, 13),
        (2, 1, 0, 1, False, 7),
        (3, 3, 1, 1, True, 11),
    ],
)
def test_max_pool_backward(k, stride, pad, dil, ceil, size):
    torch.manual_seed(3)
    x = torch.randn(2, 3, size, size + 2, **f64)
    y, idx = F.max_pool2d(x, k, stride, pad, dil, ceil, return_indices=True)
    _, g, (gx,) = _autograd(lambda x: F.max_pool2d(x, k, stride, pad, dil, ceil), x)
    ours = dec.max_pool2d_with_indices_backward(g, x, [k, k], [stride] * 2, [pad] * 2, [dil] * 2, ceil, idx)
    assert torch.equal(ours, gx)  # sums of the same few values at the same places: exact


@pytest.mark.parametrize("out, size", [((1, 1), (7, 7)), ((2, 3), (9, 7)), ((4, 4), (5, 11))])
def test_adaptive_max_pool_backward(out, size):
    torch.manual_seed(4)
    x = torch.randn(2, 3, *size, **f64)
    _, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    _, g, (gx,) = _autograd(lambda x: F.adaptive_max_pool2d(x, out), x)
    assert torch.equal(dec.adaptive_max_pool2d_backward(g, x, idx), gx)
    values, indices = dec.adaptive_max_pool2d(x, out)  # the forward ONNX lacks
    assert torch.equal(values, F.adaptive_max_pool2d(x, out)) and torch.equal(indices, idx)


@pytest.mark.parametrize(
    "k, stride, pad, ceil, include, divisor, size",
    [
        (2, 2, 0, False, True, None, 8),
        (3, 1, 1, False, False, None, 9),
        (3, 2, 1, True, True, None, 10),
        (3, 2, 1, True, False, None, 12),
        (3, 2, 0, True, True, None, 11),
        (2, 2, 1, False, True, 3, 7),
        (5, 3, 2, True, False, None, 14),
    ],
)
def test_avg_pool_backward(k, stride, pad, ceil, include, divisor, size):
    torch.manual_seed(5)
    x = torch.randn(2, 3, size, size + 1, **f64)
    _, g, (gx,) = _autograd(lambda x: F.avg_pool2d(x, k, stride, pad, ceil, include, divisor), x)
    ours = dec.avg_pool2d_backward(g, x, [k, k], [stride] * 2, [pad] * 2, ceil, include, divisor)
    torch.testing.assert_close(ours, gx, **TOL)


@pytest.mark.parametrize("out, size", [((1, 1), (7, 7)), ((3, 2), (10, 7)), ((5, 5), (7, 13))])
def test_adaptive_avg_pool_backward(out, size):
    torch.manual_seed(6)
    x = torch.randn(2, 3, *size, **f64)
    _, g, (gx,) = _autograd(lambda x: F.adaptive_avg_pool2d(x, out), x)
    torch.testing.assert_close(dec.adaptive_avg_pool2d_backward(g, x), gx, **TOL)


@pytest.mark.parametrize(
    "mode, corners, out, scale",
    [
        ("bilinear", False, (13, 9), None),
        ("bilinear", True, (12, 17), None),
        ("bicubic", False, (11, 14), None),
        ("nearest", None, (14, 10), None),
        ("bilinear", False, None, 2.0),
    ],
)
def test_upsample_backward(mode, corners, out, scale):
    torch.manual_seed(7)
    x = torch.randn(2, 3, 6, 5, **f64)
    up = lambda x: F.interpolate(x, out, scale, mode=mode, align_corners=corners)  # noqa: E731
    y, g, (gx,) = _autograd(up, x)
    op = {
        "bilinear": torch.ops.aten.upsample_bilinear2d_backward.default,
        "bicubic": torch.ops.aten.upsample_bicubic2d_backward.default,
        "nearest": torch.ops.aten.upsample_nearest2d_backward.default,
    }[mode]
    table = dec.decomposition_table()
    extra = [] if mode == "nearest" else [corners]
    scales = [scale, scale] if scale else [None, None]
    ours = table[op](g, list(y.shape[2:]), list(x.shape), *extra, *scales)
    torch.testing.assert_close(ours, gx, **TOL)
