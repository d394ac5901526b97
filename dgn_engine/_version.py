"""The version, in one place: the package face, the records and pyproject.toml (setuptools reads it) use it."""

__version__ = "0.1.0"

# Raised whenever the same model and settings are exported as other graphs, so that a cached export of an
# older revision is exported again: 2 = weight gradients as products where they pay, linear weights kept
# once; 3 = masked gradients as products; 4 = crops folded into convolutions, upsampling by Concat,
# BatchNorm's variance by a product; 5 = Clip's gradient reads its output; 6 = grouped strided convolutions'
# input gradient from the zero-stuffed output gradient; 7 = pixel mode's spectrum with its real and imaginary
# parts ahead of the frequencies; 8 = per-channel scales before a convolution moved onto its kernel;
# 9 = ReLU and Clip gradient masks as clipped 1x1 depthwise convolutions; 10 = stride-1 weight gradients
# from contiguous slices of the thinner tensor.
GRAPHS_REVISION = 10
