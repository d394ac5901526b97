"""Backward ops written as forward ops, so that a traced step has an ONNX translation everywhere.

convolution_backward: with stride 1 the input gradient is a convolution of the output gradient with
the flipped, in/out-swapped kernel, fully padded (onnxruntime's Conv is much faster than its
ConvTranspose on the CPU); the weight gradient a convolution of the input with the output gradient
(groups folded into the batch axis). Only stride 1 and dilation 1 occur in G and VGG. max_pool2d_with_indices_backward: a scatter-add of the
gradient at the recorded argmax positions.
"""
from __future__ import annotations

import torch
from torch._decomp import core_aten_decompositions

aten = torch.ops.aten


def convolution_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    if any(s != 1 for s in stride) or any(d != 1 for d in dilation) or transposed:
        raise NotImplementedError("convolution_backward: only stride 1, dilation 1, non-transposed")
    grad_in = grad_w = grad_b = None
    n, cin, h, w = inp.shape
    cg, og = cin // groups, weight.shape[0] // groups
    kh, kw = weight.shape[2:]
    if output_mask[0]:
        flipped = weight.flip(2, 3).reshape(groups, og, cg, kh, kw).transpose(1, 2).reshape(groups * cg, og, kh, kw)
        grad_in = aten.convolution(grad_out, flipped, None, [1, 1], [kh - 1 - padding[0], kw - 1 - padding[1]],
                                   [1, 1], False, [0, 0], groups)
    if output_mask[1]:
        oh, ow = grad_out.shape[2:]
        # per group g: grad_w[g, o, c] = sum_n x[n, g, c] (*) grad_out[n, g, o]  (a correlation)
        x = inp.reshape(n, groups, cg, h, w).permute(2, 1, 0, 3, 4).reshape(cg, groups * n, h, w)
        go = grad_out.reshape(n, groups, og, oh, ow).permute(1, 2, 0, 3, 4).reshape(groups * og, n, oh, ow)
        grad_w = aten.convolution(x, go, None, [1, 1], padding, [1, 1], False, [0, 0], groups).transpose(0, 1)
    if output_mask[2]:
        grad_b = grad_out.sum((0, 2, 3))
    return grad_in, grad_w, grad_b


def max_pool2d_with_indices_backward(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode,
                                     indices):
    n, c, h, w = inp.shape
    flat = torch.zeros(n * c, h * w, dtype=grad_out.dtype, device=grad_out.device)
    flat = flat.scatter_add(1, indices.reshape(n * c, -1), grad_out.reshape(n * c, -1))
    return flat.reshape(inp.shape)


def decomposition_table() -> dict:
    table = dict(core_aten_decompositions())
    table[aten.convolution_backward.default] = convolution_backward
    table[aten.max_pool2d_with_indices_backward.default] = max_pool2d_with_indices_backward
    return table
