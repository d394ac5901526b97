"""Backward ops written as forward ops, so that a traced step has an ONNX translation everywhere.

Which case takes which path:
- convolution_backward, input gradient: a plain (non-transposed) convolution with stride 1 and
  padding <= dilation * (kernel - 1) is a Conv of the output gradient with the flipped, in/out-swapped
  kernel (onnxruntime's Conv is much faster than its ConvTranspose on the CPU); a grouped strided one
  (depthwise: MobileNets, EfficientNets) convolves the output gradient with zeros stuffed between its
  values at stride 1 (onnxruntime's ConvTranspose runs one outer product per group and sums their
  k*k-fold copies: 3-4 % of EfficientNet-Lite1's step each); every other strided or over-padded
  convolution is a ConvTranspose (output_padding restores the rows no window reached);
  a transposed convolution's input gradient is the plain convolution with its own weight.
- convolution_backward, weight gradient (a transposed convolution swaps the roles of input and output
  gradient; any number of spatial axes, any groups):
  - at least MATMUL_MIN_CHANNELS input channels per group and MATMUL_MIN_FLOPS (a 224 px generator's
    layers; not the 32 px demo's): one batched MatMul per kernel offset, of the slice of the padded
    input that the offset's tap reads with the output gradient, the reduction over pixels and the
    groups in one product. onnxruntime's Conv would run this as a convolution whose kernel is
    image-sized; on 2 CPU cores the products take 0.4-0.8x its time for a 224 px generator's layers
    (bench/RESULTS.md). At stride 1 the pixels are flattened on one row pitch, so that each offset's
    slice is one contiguous range, and the tensor with fewer channels is the one sliced (a generator's
    RGB head: its 3-channel output gradient, not its input): 0.4-0.6x the strided slices' time for
    such heads (bench/weight_gradients.py);
  - otherwise: a convolution of the input with the output gradient, groups folded into the batch
    axis, the forward stride as the kernel dilation and the forward dilation as the stride, cropped to
    the kernel size. With few channels (an RGB stem, depthwise layers) the products would be too thin
    (a 7x7 stride-2 RGB stem: 1.9x the convolution's time); below MATMUL_MIN_FLOPS either form takes
    under a millisecond, and the convolution is 3 graph nodes where the products are about 4 per
    offset (export time grows with the node count: +30 % for the demo's untrained step).
- aten._convolution (traced TorchScript archives hold it): aten.convolution.
- adaptive_max_pool2d forward (no ONNX op): max pooling where the windows are regular, else a max
  per window.
- max_pool2d / adaptive_max_pool2d backward: a scatter-add of the gradient at the recorded argmax
  positions (any kernel, stride, padding, dilation, ceil_mode).
- avg_pool2d backward: the output gradient divided by each window's divisor, spread by a ConvTranspose
  with a ones kernel over the padded extent, then cropped.
- adaptive_avg_pool2d and bilinear / bicubic / nearest upsampling backward: these forwards are
  separable linear maps y = A_h x A_w^T with A fixed by the shapes, so the gradient is
  A_h^T g A_w with both matrices computed at trace time (two matrix products).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

aten = torch.ops.aten


def _flip_swap(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[G*O, C, *k] -> [G*C, O, *k], every kernel flipped: the adjoint convolution's weight."""
    o, c, *k = weight.shape
    spatial = list(range(2, weight.dim()))
    w = weight.flip(spatial).reshape(groups, o // groups, c, *k).transpose(1, 2)
    return w.reshape(groups * c, o // groups, *k)


def _padded(t: torch.Tensor, pads) -> torch.Tensor:
    """t padded by pads[a] zeros before and after each spatial axis a (t itself where all are 0)."""
    return F.pad(t, [q for p in reversed(pads) for q in (p, p)]) if any(pads) else t


MATMUL_MIN_CHANNELS = 8
MATMUL_MIN_FLOPS = 1e8


def _weight_grad(inp, grad_out, kernel, stride, padding, dilation, groups):
    """d/dw of y = conv(inp, w), by the path the module's docstring gives for its shape."""
    flops = 2 * inp.shape[0] * inp.shape[1] * math.prod(grad_out.shape[1:]) * math.prod(kernel) // groups
    if inp.shape[1] // groups >= MATMUL_MIN_CHANNELS and flops >= MATMUL_MIN_FLOPS:
        if all(s == 1 for s in stride):
            return weight_grad_shifted(inp, grad_out, kernel, stride, padding, dilation, groups)
        return weight_grad_matmul(inp, grad_out, kernel, stride, padding, dilation, groups)
    return weight_grad_conv(inp, grad_out, kernel, stride, padding, dilation, groups)


def weight_grad_matmul(inp, grad_out, kernel, stride, padding, dilation, groups):
    """d/dw of y = conv(inp, w) as products: w[:, :, offset] reads the input slice its tap sees."""
    n, cin = inp.shape[:2]
    cout, osize = grad_out.shape[1], list(grad_out.shape[2:])
    cg, og, pixels = cin // groups, cout // groups, math.prod(osize)
    x = _padded(inp, padding)
    go_t = grad_out.reshape(n * groups, og, pixels).transpose(1, 2)  # once per layer, not per offset
    taps = [
        [slice(o * dl, o * dl + s * (m - 1) + 1, s) for o in range(k)]
        for k, dl, s, m in zip(kernel, dilation, stride, osize)
    ]

    def seen(x, axis):  # slice the first spatial axis once per offset, then the next within each slice
        if axis == len(kernel):
            yield x.reshape(n * groups, cg, pixels)
            return
        for tap in taps[axis]:
            yield from seen(x[(slice(None),) * (2 + axis) + (tap,)], axis + 1)

    per_offset = [torch.bmm(x_o, go_t) for x_o in seen(x, 0)]  # [n * groups, cg, og]; 3-d: no broadcasting
    g = torch.cat(per_offset, -1).reshape(n, groups, cg, -1, og)
    g = g.sum(0) if n > 1 else g.reshape(groups, cg, -1, og)  # [groups, cg, offsets, og]
    return g.permute(0, 3, 1, 2).reshape(cout, cg, *kernel)


def weight_grad_shifted(inp, grad_out, kernel, stride, padding, dilation, groups):
    """d/dw of a stride-1 y = conv(inp, w) as products over flattened pixels. Both tensors are laid
    on one row pitch, so each kernel offset reads one contiguous slice of a flattened tensor: of the
    padded input (w[offset] = sum_p x[p + offset] g[p]), or, where the output gradient has fewer
    channels, of the output gradient padded by the kernel's reach (sum_r x[r] g[r - offset]): the
    copied slices are of the thinner tensor. Columns past a row's end are zeros on the fixed side, so
    what a slice wraps into the next row multiplies zero."""
    if any(s != 1 for s in stride):
        raise ValueError(f"weight_grad_shifted serves stride-1 convolutions only, not stride {tuple(stride)}")
    n, cin = inp.shape[:2]
    cout, d = grad_out.shape[1], len(kernel)
    cg, og = cin // groups, cout // groups
    x = _padded(inp, padding)
    reach = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
    slide_input = cg * math.prod(x.shape[2:]) <= og * math.prod(m + r for m, r in zip(x.shape[2:], reach))
    if slide_input:
        slid, fixed, cs, cf = x, grad_out, cg, og
    else:
        slid, fixed, cs, cf = _padded(grad_out, reach), x, og, cg
    grid, sizes = slid.shape[2:], fixed.shape[2:]
    pitch = [math.prod(grid[a + 1 :]) for a in range(d)]
    length = sum((m - 1) * p for m, p in zip(sizes, pitch)) + 1
    fixed = F.pad(fixed, [q for a in reversed(range(1, d)) for q in (0, grid[a] - sizes[a])])
    f_t = fixed.reshape(n * groups, cf, -1)[:, :, :length].transpose(1, 2)  # once per layer, not per offset
    flat = slid.reshape(n * groups, cs, -1)
    per_offset = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        taps = offset if slide_input else [k - 1 - o for k, o in zip(kernel, offset)]
        start = sum(t * dl * p for t, dl, p in zip(taps, dilation, pitch))
        per_offset.append(torch.bmm(flat[:, :, start : start + length], f_t))  # [n * groups, cs, cf]
    g = torch.cat(per_offset, -1).reshape(n, groups, cs, -1, cf)
    g = g.sum(0) if n > 1 else g.reshape(groups, cs, -1, cf)  # [groups, cs, offsets, cf]
    g = g.permute(0, 3, 1, 2) if slide_input else g.permute(0, 1, 3, 2)  # [groups, og, cg, offsets]
    return g.reshape(cout, cg, *kernel)


def weight_grad_conv(inp, grad_out, kernel, stride, padding, dilation, groups):
    """d/dw of y = conv(inp, w): per group, a correlation of the input with the output gradient."""
    n, cin, *size = inp.shape
    cout, osize = grad_out.shape[1], grad_out.shape[2:]
    cg, og = cin // groups, cout // groups
    d = len(size)
    x = inp.reshape(n, groups, cg, *size).permute(2, 1, 0, *range(3, 3 + d)).reshape(cg, groups * n, *size)
    go = grad_out.reshape(n, groups, og, *osize).permute(1, 2, 0, *range(3, 3 + d)).reshape(groups * og, n, *osize)
    g = aten.convolution(x, go, None, list(dilation), list(padding), list(stride), False, [0] * d, groups)
    if tuple(g.shape[2:]) != tuple(kernel):
        g = g[(slice(None), slice(None), *(slice(0, k) for k in kernel))]
    return g.transpose(0, 1)


def _zero_stuffed(grad_out, stride):
    """[N, C, O1, O2, ...] -> [N, C, O1*s1, O2*s2, ...], each value followed by s-1 zeros on every axis
    (a concatenation with zeros on a new axis after it, merged into it)."""
    for axis, s in enumerate(stride, start=2):
        if s > 1:
            one = grad_out.unsqueeze(axis + 1)
            zeros = one.new_zeros((*one.shape[: axis + 1], s - 1, *one.shape[axis + 2 :]))
            shape = list(grad_out.shape)
            shape[axis] *= s
            grad_out = torch.cat([one, zeros], axis + 1).reshape(shape)
    return grad_out


def _zero_stuffed_pads(grad_out, inp, kernel, stride, padding, dilation):
    """The input gradient of a strided convolution is the stride-1 convolution of its zero-stuffed
    output gradient with the flipped kernel, padded dl*(k-1)-p before and n-o*s+p after. torch pads
    both sides alike: (that padding, the crop before, the crop after), or None where p exceeds the
    kernel's reach."""
    pads, before, after = [], [], []
    for o, n, k, s, p, dl in zip(grad_out.shape[2:], inp.shape[2:], kernel, stride, padding, dilation):
        lead, trail = dl * (k - 1) - p, n - o * s + p
        if lead < 0:
            return None
        both = max(lead, trail)
        pads.append(both)
        before.append(both - lead)
        after.append(both - trail)
    return pads, before, after


def convolution_backward(
    grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
):
    grad_in = grad_w = grad_b = None
    kernel = weight.shape[2:]
    d = len(kernel)
    if output_mask[0]:
        if transposed:
            grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, False, [0] * d, groups)
        elif all(s == 1 for s in stride) and all(p <= dl * (k - 1) for p, dl, k in zip(padding, dilation, kernel)):
            pads = [dl * (k - 1) - p for p, dl, k in zip(padding, dilation, kernel)]
            grad_in = aten.convolution(
                grad_out, _flip_swap(weight, groups), None, [1] * d, pads, dilation, False, [0] * d, groups
            )
        elif groups > 1 and (stuffed := _zero_stuffed_pads(grad_out, inp, kernel, stride, padding, dilation)):
            pads, before, after = stuffed
            grad_in = aten.convolution(
                _zero_stuffed(grad_out, stride),
                _flip_swap(weight, groups),
                None,
                [1] * d,
                pads,
                dilation,
                False,
                [0] * d,
                groups,
            )
            if any(before) or any(after):  # a crop, which the exported graph folds into the Conv's own pads
                grad_in = F.pad(grad_in, [x for b, a in zip(reversed(before), reversed(after)) for x in (-b, -a)])
        else:
            covered = [
                (o - 1) * s - 2 * p + dl * (k - 1) + 1
                for o, s, p, dl, k in zip(grad_out.shape[2:], stride, padding, dilation, kernel)
            ]
            extra = [size - c for size, c in zip(inp.shape[2:], covered)]
            grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, extra, groups)
    if output_mask[1]:
        if transposed:  # y = conv_transpose(x, w) is the adjoint of conv(., w): swap input and output gradient
            grad_w = _weight_grad(grad_out, inp, kernel, stride, padding, dilation, groups)
        else:
            grad_w = _weight_grad(inp, grad_out, kernel, stride, padding, dilation, groups)
    if output_mask[2]:
        grad_b = grad_out.sum([0, *range(2, grad_out.dim())])
    return grad_in, grad_w, grad_b


def _scatter_indices(grad_out, inp, indices):
    n, c = inp.shape[:2]
    flat = torch.zeros(n * c, math.prod(inp.shape[2:]), dtype=grad_out.dtype, device=grad_out.device)
    flat = flat.scatter_add(1, indices.reshape(n * c, -1), grad_out.reshape(n * c, -1))
    return flat.reshape(inp.shape)


def max_pool2d_with_indices_backward(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices):
    return _scatter_indices(grad_out, inp, indices)


def adaptive_max_pool2d_backward(grad_out, inp, indices):
    return _scatter_indices(grad_out, inp, indices)


def adaptive_max_pool2d(inp, output_size):
    """ONNX has no adaptive max pooling: a max pooling where the windows are regular, else each
    window's max and argmax (indices flat over the input plane, as torch records them)."""
    n, c, h, w = inp.shape
    oh, ow = output_size
    if h % oh == 0 and w % ow == 0:
        return aten.max_pool2d_with_indices(inp, [h // oh, w // ow], [h // oh, w // ow])
    values, indices = [], []
    for i in range(oh):
        hs, he = i * h // oh, -(-(i + 1) * h // oh)
        for j in range(ow):
            ws, we = j * w // ow, -(-(j + 1) * w // ow)
            v, a = inp[:, :, hs:he, ws:we].reshape(n, c, -1).max(-1)
            values.append(v)
            indices.append((hs + a // (we - ws)) * w + ws + a % (we - ws))
    return torch.stack(values, -1).reshape(n, c, oh, ow), torch.stack(indices, -1).reshape(n, c, oh, ow)


def _pool_divisors(size, out, k, s, p, ceil_mode, count_include_pad) -> list[float]:
    """The element count of each window of one spatial axis, as avg_pool2d divides by it."""
    counts = []
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)
        n = end - start
        start, end = max(start, 0), min(end, size)
        counts.append(float(n if count_include_pad else end - start))
    return counts


def avg_pool2d_backward(grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    n, c, h, w = inp.shape
    oh, ow = grad_out.shape[2:]
    kh, kw = kernel_size
    sh, sw = stride or kernel_size
    ph, pw = padding if len(padding) == 2 else (padding[0], padding[0])
    if divisor_override:
        g = grad_out / divisor_override
    else:
        with disable_proxy_modes_tracing():
            dh = torch.tensor(_pool_divisors(h, oh, kh, sh, ph, ceil_mode, count_include_pad), dtype=grad_out.dtype)
            dw = torch.tensor(_pool_divisors(w, ow, kw, sw, pw, ceil_mode, count_include_pad), dtype=grad_out.dtype)
            divisor = (dh[:, None] * dw[None, :]).to(grad_out.device)
        g = grad_out / divisor
    ones = torch.ones(1, 1, kh, kw, dtype=grad_out.dtype, device=grad_out.device)
    spread = aten.convolution(g.reshape(n * c, 1, oh, ow), ones, None, [sh, sw], [0, 0], [1, 1], True, [0, 0], 1)
    # `spread` covers the padded input from -padding; crop it to the input, zeros where no window reached
    fh, fw = spread.shape[2:]
    spread = F.pad(spread, [0, max(0, w + pw - fw), 0, max(0, h + ph - fh)])
    return spread[:, :, ph : ph + h, pw : pw + w].reshape(n, c, h, w)


def _linear_map_backward(grad_out, size, forward):
    """The gradient of a separable linear resampling y = A_h x A_w^T: A_h^T g A_w, where the matrices
    are found by applying `forward(images, axis)` to identity images along each axis at trace time."""
    h, w = size
    with disable_proxy_modes_tracing():
        a_h = forward(torch.eye(h, dtype=torch.float64).reshape(h, 1, h, 1), 0)[:, 0, :, 0]  # [h, oh]
        a_w = forward(torch.eye(w, dtype=torch.float64).reshape(w, 1, 1, w), 1)[:, 0, 0, :]  # [w, ow]
        a_h, a_w = (a.to(grad_out.dtype).to(grad_out.device) for a in (a_h, a_w))
    return a_h @ grad_out @ a_w.T  # [h, oh] @ [.., oh, ow] @ [ow, w]


def _one_axis(pair, axis, other):
    return (pair[0], other) if axis == 0 else (other, pair[1])


def adaptive_avg_pool2d_backward(grad_out, inp):
    out = grad_out.shape[2:]
    return _linear_map_backward(
        grad_out, inp.shape[2:], lambda x, axis: F.adaptive_avg_pool2d(x, _one_axis(out, axis, 1))
    )


def _interpolation_backward(op, corners: bool):
    """The backward of aten.upsample_{bilinear,bicubic}2d (corners) or upsample_nearest2d."""

    def backward(grad_out, output_size, input_size, *args, scales_h=None, scales_w=None):
        extra = args[:1] if corners else ()
        given = list(args[len(extra) :])
        scales = given + [scales_h, scales_w][len(given) :]

        def forward(x, axis):
            return op(x, _one_axis(output_size, axis, 1), *extra, *_one_axis(scales, axis, None))

        return _linear_map_backward(grad_out, input_size[2:], forward)

    return backward


def _convolution(inp, weight, bias, stride, padding, dilation, transposed, output_padding, groups, *_flags):
    """What TorchScript archives call (cuDNN and TF32 flags besides): the plain convolution."""
    return aten.convolution(inp, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


def decomposition_table() -> dict:
    table = dict(core_aten_decompositions())
    table[aten._convolution.default] = _convolution
    table[aten.convolution_backward.default] = convolution_backward
    table[aten.max_pool2d_with_indices_backward.default] = max_pool2d_with_indices_backward
    table[aten.adaptive_max_pool2d.default] = adaptive_max_pool2d
    table[aten.adaptive_max_pool2d_backward.default] = adaptive_max_pool2d_backward
    table[aten.avg_pool2d_backward.default] = avg_pool2d_backward
    table[aten._adaptive_avg_pool2d_backward.default] = adaptive_avg_pool2d_backward
    table[aten.upsample_bilinear2d_backward.default] = _interpolation_backward(aten.upsample_bilinear2d.default, True)
    table[aten.upsample_bicubic2d_backward.default] = _interpolation_backward(aten.upsample_bicubic2d.default, True)
    table[aten.upsample_nearest2d_backward.default] = _interpolation_backward(aten.upsample_nearest2d.default, False)
    return table
