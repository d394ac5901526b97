"""Generator architectures as plain data (no torch), shared by the torch modules and the engine.

A plan is the feature block (channels x size x size = the feature vector), a list of layers
("up" = nearest 2x upsampling, or a convolution with its padding, ReLU and BatchNorm) and the
output image size. The paper's two generators are tabulated; smaller ones are derived from a
classifier's input size with the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BN_EPS = 1e-3  # Keras BatchNormalization epsilon


@dataclass(frozen=True)
class Conv:
    cin: int
    cout: int
    k: int
    same: bool  # "same" padding (TensorFlow rule: the odd pixel goes after), else "valid"
    relu: bool = True
    bn: bool = True

    @property
    def pads(self) -> tuple[int, int]:
        """(before, after) padding on each spatial axis."""
        if not self.same:
            return (0, 0)
        total = self.k - 1
        return (total // 2, total - total // 2)


@dataclass(frozen=True)
class GeneratorPlan:
    feature_channels: int
    feature_size: int
    layers: tuple  # of "up" | Conv
    out_channels: int
    out_size: int
    has_alpha: bool = True  # the untrained G owns alpha; the decoder gets its feature from outside
    name: str = field(default="custom", compare=False)

    @property
    def features(self) -> int:
        return self.feature_channels * self.feature_size**2

    def convs(self) -> list[Conv]:
        return [layer for layer in self.layers if layer != "up"]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable tensors in a fixed order: alpha, then conv weight/bias and BN gamma/beta."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.has_alpha:
            shapes["alpha"] = (self.features,)
        for i, c in enumerate(self.convs()):
            shapes[f"conv{i}.weight"] = (c.cout, c.cin, c.k, c.k)
            shapes[f"conv{i}.bias"] = (c.cout,)
            if c.bn:
                shapes[f"bn{i}.weight"] = (c.cout,)
                shapes[f"bn{i}.bias"] = (c.cout,)
        return shapes

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """BatchNorm running statistics (used in eval mode, i.e. by the pretrained decoder)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i, c in enumerate(self.convs()):
            if c.bn:
                shapes[f"bn{i}.running_mean"] = (c.cout,)
                shapes[f"bn{i}.running_var"] = (c.cout,)
        return shapes

    def trainable_count(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def last_bn(self) -> str:
        return f"bn{len(self.convs()) - 1}"

    @property
    def grown_size(self) -> int:
        """G's last layer makes an even size; an odd image size is its top-left crop."""
        return self.out_size + self.out_size % 2

    def spatial_sizes(self) -> list[int]:
        size, sizes = self.feature_size, []
        for layer in self.layers:
            size = size * 2 if layer == "up" else size - (layer.k - 1) + sum(layer.pads)
            sizes.append(size)
        return sizes

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "feature_channels": self.feature_channels,
            "feature_size": self.feature_size,
            "out_channels": self.out_channels,
            "out_size": self.out_size,
            "has_alpha": self.has_alpha,
            "layers": [c if c == "up" else [c.cin, c.cout, c.k, c.same, c.relu, c.bn] for c in self.layers],
        }

    @staticmethod
    def from_json(d: dict) -> "GeneratorPlan":
        layers = tuple(c if c == "up" else Conv(*c) for c in d["layers"])
        return GeneratorPlan(
            d["feature_channels"],
            d["feature_size"],
            layers,
            d["out_channels"],
            d["out_size"],
            d["has_alpha"],
            d.get("name", "custom"),
        )


def _trunk(cin: int, blocks: list[tuple[int, int]]) -> list:
    """Each block: up2, conv k valid, conv k same (ReLU + BN after each conv)."""
    layers: list = []
    for width, k in blocks:
        layers += ["up", Conv(cin, width, k, False), Conv(width, width, k, True)]
        cin = width
    return layers


def _block_kernels(out_size: int, max_start: int = 6) -> tuple[int, list[int]]:
    """Kernel sizes of the trunk's blocks, last first derived backwards from the (even) image size.

    The head's valid 3x3 conv needs out+2 pixels after the last upsampling; each block's valid
    conv of kernel k turns m into m-k+1 and must start from an even (upsampled) size, so an odd m
    takes an even kernel (4 when large, 2 when small, as the paper's G does at 113 and 9 pixels).
    """
    m, kernels = (out_size + 2) // 2, []
    while True:
        k = 3 if m % 2 == 0 else (4 if m > 16 else 2)
        kernels.append(k)
        start = (m + k - 1) // 2
        if start <= max_start:
            return start, kernels[::-1]
        m = start


PAPER_WIDTHS = (512, 256, 256, 128, 128)  # the trunk's five blocks at 224 px
# the untrained G's default width with a sigmoid output (generators/untrained.py): on EfficientNet-Lite1
# at 240 px a quarter-width G reached higher activations in 150 steps than half or full width, at a
# fraction of the cost; 3/16 (24 to 96 channels: multiples of 8, which onnxruntime's blocked convolutions
# need) for 500 steps is recognised by a judge more often than a quarter for 400, in less time per target
# (bench/RESULTS.md)
SIGMOID_G_WIDTH = 0.1875


def untrained_width(image_size: int, image_range: str) -> float:
    """The untrained G's default width: the paper's scaled by image_size / 224 (at most 1), at most
    SIGMOID_G_WIDTH for a sigmoid output."""
    width = min(1.0, image_size / 224)
    return min(width, SIGMOID_G_WIDTH) if image_range == "sigmoid" else width


PAPER_FEATURE_CHANNELS = 128


def generator_plan(
    kind: str, out_size: int = 224, out_channels: int = 3, width: float = 1.0, linear_head: bool = False
) -> GeneratorPlan:
    """kind: 'untrained' (head conv3 + ReLU + BN; linear_head: without the ReLU, for an output squashed
    by a sigmoid afterwards) or 'decoder' (head conv64, conv64, linear conv3 + BN).

    At 224 px, 3 channels, width 1 this is exactly the paper's G; other sizes keep the paper's last
    blocks and scale every width by `width`; an odd size is grown to the next even one and cropped.
    """
    start, kernels = _block_kernels(out_size + out_size % 2)
    widths = (
        list(PAPER_WIDTHS[-len(kernels) :])
        if len(kernels) <= len(PAPER_WIDTHS)
        else [PAPER_WIDTHS[0]] * (len(kernels) - len(PAPER_WIDTHS)) + list(PAPER_WIDTHS)
    )
    scaled = lambda c: max(4, int(round(c * width)))  # noqa: E731
    c0 = scaled(PAPER_FEATURE_CHANNELS)
    layers = _trunk(c0, [(scaled(w), k) for w, k in zip(widths, kernels)])
    last = scaled(widths[-1])
    if kind == "untrained":
        layers += ["up", Conv(last, out_channels, 3, False, relu=not linear_head)]
    elif kind == "decoder":
        head = scaled(64)
        layers += [
            "up",
            Conv(last, head, 3, False),
            Conv(head, head, 3, True),
            Conv(head, out_channels, 3, True, relu=False),
        ]
    else:
        raise ValueError(f"unknown generator kind {kind!r}")
    plan = GeneratorPlan(
        c0,
        start,
        tuple(layers),
        out_channels,
        out_size,
        has_alpha=(kind == "untrained"),
        name=f"{kind}-{out_size}px-w{width:g}" + ("-linear" if linear_head else ""),
    )
    assert plan.spatial_sizes()[-1] == plan.grown_size, plan.spatial_sizes()
    return plan


def pixel_plan(size: int, channels: int) -> GeneratorPlan:
    """Pixel mode's "generator": no feature vector and no layers, only the image's size and channels."""
    return GeneratorPlan(0, 0, (), channels, size, has_alpha=False, name="pixel")


def phase_shape(channels: int, size: int) -> tuple[int, ...]:
    """maco mode's trainable per target: the phase [channels, rows, the non-negative half of columns]."""
    return (channels, size, size // 2 + 1)


def spectrum_shape(channels: int, size: int) -> tuple[int, ...]:
    """Pixel mode's trainable per target: [channels, real and imaginary part, rows (all frequencies),
    columns (the non-negative half)]. The parts ahead of the frequencies: splitting them, scaling by
    frequency and their gradients are copies of whole planes, not of every other number."""
    return (channels, 2, size, size // 2 + 1)
