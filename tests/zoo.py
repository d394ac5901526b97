"""A zoo of small classifiers in the shapes people use (random weights, 32-64 px, 10 classes).

Each factory is a `module:factory` target for --classifier and sets `preprocessing`. They carry the
building blocks of the real families: strided and depthwise convolutions, residual adds, concatenation,
squeeze-and-excitation, ReLU6 / hardswish / SiLU / GELU, "same" padding done with F.pad, avg and
ceil-mode max pooling, dilation, interpolation, LayerNorm and attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dgn_engine.preprocessing import Preprocessing

RGB = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _finish(module: nn.Module, size: int) -> nn.Module:
    """He-scaled weights and BatchNorm statistics of its own activations, so signals keep unit scale."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.05)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    module.train()
    with torch.no_grad():
        for _ in range(2):
            module(torch.randn(16, 3, size, size))
    module.preprocessing = Preprocessing(size, "RGB", *RGB)
    return module.eval()


def _bn_conv(cin, cout, k, stride=1, groups=1, act=nn.ReLU, padding=None, dilation=1):
    pad = (k - 1) // 2 * dilation if padding is None else padding
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False),
        nn.BatchNorm2d(cout),
        act() if act else nn.Identity(),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _bn_conv(cin, cout, 3, stride)
        self.conv2 = _bn_conv(cout, cout, 3, act=None)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            _bn_conv(cin, mid, 1), _bn_conv(mid, mid, 3, stride), _bn_conv(mid, cout, 1, act=None)
        )
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.downsample(x))


class ResNet(nn.Module):
    def __init__(self, blocks: nn.Sequential, width: int):
        super().__init__()
        # the real stem: 7x7 stride 2, then 3x3 stride-2 max pooling with padding
        self.stem = nn.Sequential(_bn_conv(3, 16, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layer1 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


def resnet_basic():
    torch.manual_seed(1)
    return _finish(ResNet(nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2)), 32), 64)


def resnet_bottleneck():
    torch.manual_seed(2)
    return _finish(ResNet(nn.Sequential(Bottleneck(16, 8, 32, 1), Bottleneck(32, 16, 48, 2)), 48), 48)


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, gate=nn.Hardsigmoid, act=nn.ReLU):
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, expand, cout, k, stride, act=nn.ReLU6, se=False):
        super().__init__()
        layers = [_bn_conv(cin, expand, 1, act=act), _bn_conv(expand, expand, k, stride, groups=expand, act=act)]
        if se:
            layers.append(SqueezeExcite(expand, max(4, expand // 4)))
        layers.append(_bn_conv(expand, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v2():
    torch.manual_seed(3)
    net = nn.Sequential(
        _bn_conv(3, 16, 3, 2, act=nn.ReLU6),
        InvertedResidual(16, 32, 16, 3, 1),
        InvertedResidual(16, 48, 24, 3, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(24, 10),
    )
    return _finish(net, 48)


def mobilenet_v3():
    torch.manual_seed(4)
    net = nn.Sequential(
        _bn_conv(3, 16, 3, 2, act=nn.Hardswish),
        InvertedResidual(16, 32, 16, 3, 1, act=nn.ReLU, se=True),
        InvertedResidual(16, 48, 24, 5, 2, act=nn.Hardswish, se=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 32),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    )
    return _finish(net, 64)


class SameConv(nn.Conv2d):
    """TensorFlow "same" padding computed from the input size: asymmetric where the total is odd."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    def __init__(self, cin, cout, stride, drop_path=0.1):
        super().__init__()
        mid = cin * 4
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.depthwise = nn.Sequential(
            SameConv(mid, mid, 3, stride, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU()
        )
        self.se = SqueezeExcite(mid, max(4, cin // 4), gate=nn.Sigmoid, act=nn.SiLU)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual, self.drop_path = stride == 1 and cin == cout, drop_path

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        if not self.residual:
            return y
        if self.training:  # stochastic depth: identity at inference
            y = y * (torch.rand(y.shape[0], 1, 1, 1, device=y.device) > self.drop_path) / (1 - self.drop_path)
        return x + y


def efficientnet():
    torch.manual_seed(5)
    net = nn.Sequential(
        SameConv(3, 16, 3, 2, bias=False),
        nn.BatchNorm2d(16),
        nn.SiLU(),
        MBConv(16, 16, 1),
        MBConv(16, 24, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(24, 10),
    )
    return _finish(net, 45)  # odd: "same" padding of the stride-2 convs is asymmetric


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet():
    torch.manual_seed(6)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        DenseLayer(16, 8),
        DenseLayer(24, 8),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 16, 1, bias=False),
        nn.AvgPool2d(2, 2),
        DenseLayer(16, 8),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(24, 10),
    )
    return _finish(net, 32)


class InceptionBlock(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = _bn_conv(cin, 8, 1)
        self.b3 = nn.Sequential(_bn_conv(cin, 8, 1), _bn_conv(8, 12, 3))
        self.b5 = nn.Sequential(_bn_conv(cin, 4, 1), _bn_conv(4, 8, 5))
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _bn_conv(cin, 8, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)


def inception():
    torch.manual_seed(7)
    net = nn.Sequential(
        _bn_conv(3, 16, 3, 2, padding=0),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        InceptionBlock(16),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        InceptionBlock(36),
        nn.AdaptiveMaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36 * 4, 10),
    )
    return _finish(net, 75)


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1(x), self.expand3(x)], 1)


def squeezenet():
    torch.manual_seed(8)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 8, 16),
        Fire(32, 8, 16),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(32, 8, 24),
        nn.Dropout(0.5),
        nn.Conv2d(48, 10, 1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return _finish(net, 47)


class DilatedNet(nn.Module):
    """Dilated convolutions and a bilinear upsampling, as segmentation-style backbones have."""

    def __init__(self):
        super().__init__()
        self.stem = _bn_conv(3, 16, 3, 2)
        self.dilated = _bn_conv(16, 16, 3, dilation=2)
        self.fuse = _bn_conv(32, 16, 3, act=nn.Hardtanh)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = self.stem(x)
        d = F.interpolate(F.avg_pool2d(self.dilated(s), 2), size=s.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([s, d], 1))
        return self.fc(y.mean((2, 3)))


def dilated():
    torch.manual_seed(9)
    return _finish(DilatedNet(), 40)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, size=32, patch=8, dim=32, heads=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(ViTBlock(dim, heads), ViTBlock(dim, heads))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit():
    torch.manual_seed(10)
    return _finish(TinyViT(), 32)


ZOO = {
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "densenet": densenet,
    "inception": inception,
    "squeezenet": squeezenet,
    "dilated": dilated,
    "vit": vit,
}
