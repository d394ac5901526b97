"""Full-size classifier shapes for `dgn-engine bench --sizes bench.shapes:resnet50,...` (random
weights, 224 px, 1,000 classes): the layer shapes of ResNet-50 and MobileNetV3-Large, built from the
zoo's blocks; timing does not depend on the values."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.zoo import InvertedResidual, _bn_conv, _finish


class Bottleneck50(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        self.body = nn.Sequential(
            _bn_conv(cin, mid, 1), _bn_conv(mid, mid, 3, stride), _bn_conv(mid, 4 * mid, 1, act=None)
        )
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, 4 * mid, 1, stride, bias=False), nn.BatchNorm2d(4 * mid))
            if stride != 1 or cin != 4 * mid
            else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.downsample(x))


def resnet50():
    torch.manual_seed(0)
    layers, cin = [], 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        stage = []
        for i in range(blocks):
            stage.append(Bottleneck50(cin, mid, stride if i == 0 else 1))
            cin = 4 * mid
        layers.append(nn.Sequential(*stage))
    net = nn.Sequential(
        _bn_conv(3, 64, 7, 2),
        nn.MaxPool2d(3, 2, 1),
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2048, 1000),
    )
    return _finish(net, 224)


# MobileNetV3-Large: kernel, expansion, output channels, squeeze-excite, activation, stride
_V3_LARGE = [
    (3, 16, 16, False, nn.ReLU, 1),
    (3, 64, 24, False, nn.ReLU, 2),
    (3, 72, 24, False, nn.ReLU, 1),
    (5, 72, 40, True, nn.ReLU, 2),
    (5, 120, 40, True, nn.ReLU, 1),
    (5, 120, 40, True, nn.ReLU, 1),
    (3, 240, 80, False, nn.Hardswish, 2),
    (3, 200, 80, False, nn.Hardswish, 1),
    (3, 184, 80, False, nn.Hardswish, 1),
    (3, 184, 80, False, nn.Hardswish, 1),
    (3, 480, 112, True, nn.Hardswish, 1),
    (3, 672, 112, True, nn.Hardswish, 1),
    (5, 672, 160, True, nn.Hardswish, 2),
    (5, 960, 160, True, nn.Hardswish, 1),
    (5, 960, 160, True, nn.Hardswish, 1),
]


def mobilenet_v3_large():
    torch.manual_seed(0)
    blocks, cin = [], 16
    for k, expand, cout, se, act, stride in _V3_LARGE:
        blocks.append(InvertedResidual(cin, expand, cout, k, stride, act=act, se=se))
        cin = cout
    net = nn.Sequential(
        _bn_conv(3, 16, 3, 2, act=nn.Hardswish),
        *blocks,
        _bn_conv(160, 960, 1, act=nn.Hardswish),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(960, 1280),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(1280, 1000),
    )
    return _finish(net, 224)
