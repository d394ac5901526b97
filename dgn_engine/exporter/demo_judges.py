"""Two Fashion-MNIST classifiers that never see a search: judges of the demo's preferred inputs.

Other architectures and seeds than the demo's D (a VGG-style net): a small residual network and a
plain MLP, trained by tools/train_judges.py on the same data and input format (32 px, gray, the
demo's mean and std). As `--classifier` names: dgn_engine.exporter.demo_judges:resnet and :mlp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import demo

JUDGES = ("resnet", "mlp")


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class SmallResNet(nn.Module):
    def __init__(self, classes: int = demo.CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = _Block(16, 16, 1)
        self.layer2 = _Block(16, 32, 2)
        self.layer3 = _Block(32, 64, 2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def mlp_module(classes: int = demo.CLASSES) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(32 * 32, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, classes)
    )


ARCHITECTURES = {"resnet": SmallResNet, "mlp": mlp_module}


def weights_file(name: str) -> str:
    return demo.path(f"judge-{name}.pt")


def _trained(name: str) -> nn.Module:
    model = ARCHITECTURES[name]()
    model.load_state_dict(torch.load(weights_file(name), map_location="cpu", weights_only=True))
    model.eval()
    model.preprocessing = demo.PREPROCESSING  # the demo's input format, read by dgn-engine
    return model


def resnet() -> nn.Module:
    return _trained("resnet")


def mlp() -> nn.Module:
    return _trained("mlp")
