"""VGG classifiers with torchvision's module names (features.N, classifier.N).

`vgg16()` is the real VGG-16 (13 conv3x3 + ReLU, 5 max-pools, FC 4096-4096-1000, dropout modules kept
for the names and disabled by eval mode). The final softmax is not part of the module: the coupled
network applies a ReLU to the class outputs instead (the paper's change). `vgg_style()` builds
smaller networks of the same family for small images.
"""

from __future__ import annotations

import torch
import torch.nn as nn

VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, convs, in_channels: int, image_size: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in convs:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        fc: list[nn.Module] = []
        width = c * size * size
        for h in hidden:
            fc += [nn.Linear(width, h), nn.ReLU(inplace=False), nn.Dropout(0.5)]
            width = h
        fc.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16(num_classes: int = 1000) -> VGG:
    return VGG(VGG16_CONVS, 3, 224, (4096, 4096), num_classes).eval()


def vgg_style(
    in_channels: int,
    image_size: int,
    num_classes: int,
    convs=(16, "M", 32, "M", 64, "M"),
    hidden: tuple[int, ...] = (64,),
) -> VGG:
    return VGG(convs, in_channels, image_size, hidden, num_classes).eval()
