"""D: the classifier a user names, with its preprocessing and the layers that can be tapped.

--classifier demo               the embedded Fashion-MNIST demo (dgn_engine/demo_data)
--classifier vgg16              the real VGG-16; --weights FILE.pth (torchvision layout),
                                FILE.h5 (Keras-1 layout) or 'random' (seeded, for timing and tests)
--classifier PATH.onnx          an ONNX file (converted by onnx2fx); its tensors are tapped by name
--classifier PATH               a TorchScript file; its submodules are tapped by name where its graphs
                                hold no control flow (traced archives), else class targets only
--classifier module:factory     factory() builds the module (its `preprocessing` and `labels` attributes,
                                where set, give its input format and class names); --weights optionally a
                                state dict
The file cannot always tell the input format: --image-size, --channels, --mean, --std say it.
A final Softmax, LogSoftmax or Sigmoid on D's output is taken off (scores.py) unless --keep-softmax.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .. import demo
from ..errors import UsageError, setting
from ..preprocessing import IMAGENET_CAFFE, IMAGENET_TORCHVISION, Preprocessing
from ..targets import OUTPUT
from .onnx_classifier import convert_onnx, read_onnx
from .scores import FinalNormalisation, find_final, looks_like_probability, skipping, warn_unfound
from .torchscript_classifier import TorchScriptClassifier, interpretable
from .vgg import vgg16, vgg_style
from .weights import apply_state_dict, keras1_state_dict, sha256_file, state_dict_from_file


@dataclass
class Classifier:
    module: nn.Module
    preprocessing: Preprocessing
    name: str
    sources: dict[str, str] = field(default_factory=dict)  # file path -> sha256
    tappable: bool = True
    labels: list[str] | None = None
    tap_points: dict[str, nn.Module] | None = None  # name -> module whose output is read; None: named_modules
    keep_softmax: bool = False  # optimise D's output as it is, a final normalisation included
    _final: object = field(default=None, init=False, repr=False)  # found once: (FinalNormalisation | None,)
    _layouts: dict = field(default_factory=dict, init=False, repr=False)  # taps -> layout(taps), D frozen

    def __post_init__(self):
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @property
    def final(self) -> FinalNormalisation | None:
        """D's final Softmax, LogSoftmax or Sigmoid, seen on a seeded probe image (None where D's output is
        not one, or where the probe fails: layout() reports a wrong input format)."""
        if self._final is None:
            pp = self.preprocessing
            rng = torch.Generator().manual_seed(0)
            probes = [torch.randn(1, pp.channels, pp.image_size, pp.image_size, generator=rng) for _ in range(2)]
            probes = [p.to(self.dtype) for p in probes]
            found, unfound_probability = None, False
            try:
                if not isinstance(self.module, torch.jit.ScriptModule):
                    found = find_final(self.module, probes[0])
                if found is None and not self.keep_softmax:  # the warning's case: only then look at the output
                    with torch.no_grad():
                        unfound_probability = all(_probability_like(self.module(p)) for p in probes)
            except Exception:  # a wrong input format, reported as such by layout()
                pass
            self._final = (found,)
            if unfound_probability:
                warn_unfound(self.name)
        return self._final[0]

    @property
    def stripped(self) -> FinalNormalisation | None:
        """The final normalisation the search drives the scores before (None with keep_softmax)."""
        return None if self.keep_softmax else self.final

    def scores_record(self) -> dict | None:
        """What the manifest says of D's scores; None where D has no final normalisation and none was kept."""
        final = self.final
        if final is None and not self.keep_softmax:
            return None
        return {
            "taken_before": None if self.keep_softmax else final.op,
            "node": final.node if final else None,
            "probability": None if self.keep_softmax else final.probability,
            "keep_softmax": self.keep_softmax,
        }

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """D's class scores: its output, before its final normalisation where that is taken off."""
        with skipping(self.stripped):
            return self.module(x)

    def taps_by_name(self) -> dict[str, nn.Module]:
        """Every named module, blocks as well as single layers: its output is the activation."""
        if not self.tappable:
            return {}
        if self.tap_points is not None:
            return self.tap_points
        return {n: m for n, m in self.module.named_modules() if n}

    def layer_names(self) -> list[str]:
        return list(self.taps_by_name())

    @property
    def dtype(self) -> torch.dtype:
        tensor = next(iter(self.module.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.module.buffers()), None)
        return tensor.dtype if tensor is not None else torch.float32

    def layout(self, taps: list[str] = ()) -> dict[str, tuple[int, ...]]:
        """Shapes (without batch) of the class outputs and of each tapped layer's output (D's forward
        runs once per set of taps: loading, resolving and coupling ask for the same one)."""
        key = tuple(taps)
        if key not in self._layouts:
            self._layouts[key] = self._probe_layout(list(taps))
        return dict(self._layouts[key])

    def _probe_layout(self, taps: list[str]) -> dict[str, tuple[int, ...]]:
        pp = self.preprocessing
        x = torch.zeros(1, pp.channels, pp.image_size, pp.image_size, dtype=self.dtype)
        tapped = Tapped(self, taps)
        with torch.no_grad():
            try:
                out, acts = tapped(x)
            except RuntimeError as e:
                raise UsageError(
                    f"classifier {self.name!r} does not accept {pp.channels}x{pp.image_size}x"
                    f"{pp.image_size} input ({str(e).splitlines()[0][:160]}); "
                    f"set {setting('image_size')}/{setting('channels')}"
                ) from None
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            what = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            raise UsageError(
                f"classifier {self.name!r} returns {what}; it must return one [batch, classes] "
                "tensor (wrap it in a module that picks the logits)"
            )
        for name, a in acts.items():
            if not isinstance(a, torch.Tensor) or a.dim() < 2:
                raise UsageError(
                    f"layer {name!r} does not return one activation tensor per image; "
                    "tap a layer inside it or around it"
                )
        return {OUTPUT: (out.shape[1],), **{n: tuple(a.shape[1:]) for n, a in acts.items()}}

    @property
    def num_classes(self) -> int:
        return self.layout()[OUTPUT][0]


class Tapped(nn.Module):
    """D returning (class outputs, {layer: activation}) for the requested layers."""

    def __init__(self, classifier: Classifier, taps: list[str]):
        super().__init__()
        self.module = classifier.module
        self.final = classifier.stripped
        self.taps = list(taps)
        self._modules_by_name = classifier.taps_by_name()
        known = list(self._modules_by_name)
        for t in self.taps:
            if t not in known:
                if not classifier.tappable:
                    raise UsageError(
                        f"classifier {classifier.name!r} is a TorchScript file with control flow, "
                        "whose layers cannot be tapped; use class targets, trace it with "
                        "torch.jit.trace, or give it as module:factory"
                    )
                shown = ", ".join(known[:40]) + (f", ... ({len(known)} in all)" if len(known) > 40 else "")
                raise UsageError(f"unknown layer {t!r}; valid layers: {shown}")

    def forward(self, x):
        acts: dict[str, torch.Tensor] = {}
        handles = [
            self._modules_by_name[t].register_forward_hook(lambda _m, _i, out, name=t: acts.__setitem__(name, out))
            for t in self.taps
        ]
        try:
            # a TorchScript archive runs op by op under plain autograd (not the JIT's own fused
            # differentiable graphs), so that its gradient is the same computation the exporter traces
            with torch.jit.optimized_execution(False), skipping(self.final):
                out = self.module(x)
        finally:
            for h in handles:
                h.remove()
        return out, acts


def _probability_like(out) -> bool:
    return isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point() and looks_like_probability(out)


def _preprocessing(default: Preprocessing | None, image_size, channels, mean, std, what: str) -> Preprocessing:
    """The weights' own preprocessing, with what the user said on top of it."""
    if default is None and image_size is None:
        raise UsageError(
            f"{what} does not tell its input size: give {setting('image_size')} "
            f"(and {setting('channels')}, {setting('mean')}, {setting('std')} if not RGB in 0..1)"
        )
    order = channels or (default.order if default else "RGB")
    n = 1 if order == "L" else 3
    same = default is not None and default.order == order
    return Preprocessing(
        image_size or default.image_size,
        order,
        tuple(mean) if mean is not None else (default.mean if same else (0.0,) * n),
        tuple(std) if std is not None else (default.std if same else (1.0,) * n),
    )


def classifier_from_module(
    module: nn.Module,
    *,
    image_size: int | None = None,
    channels: str | None = None,
    mean=None,
    std=None,
    labels: list[str] | None = None,
    keep_softmax: bool = False,
) -> Classifier:
    """An in-memory torch module as D (a copy: the caller's module keeps its mode, device and
    gradients). Its input format comes from the arguments, else its `preprocessing` attribute. A module
    on the meta device is refused; one holding float16, bfloat16 or float64 tensors becomes a float32 copy,
    with a warning (the exported step graph is float32). `keep_softmax`: optimise its output as it is,
    a final Softmax, LogSoftmax or Sigmoid included."""
    if not isinstance(module, nn.Module):
        raise UsageError(f"a classifier is a torch.nn.Module, a file or a name, not a {type(module).__name__}")
    problem = module_problem(module)
    if problem:
        raise UsageError(f"the module {type(module).__name__}: {problem}")
    default = getattr(module, "preprocessing", None)
    default = default if isinstance(default, Preprocessing) else None
    what = f"the module {type(module).__name__}"
    pp = _preprocessing(default, image_size, channels, mean, std, what.replace("--", ""))
    copied = copy.deepcopy(module).cpu()
    other = sorted({str(t.dtype).removeprefix("torch.") for t in _tensors(copied) if _other_float(t)})
    if other:
        warnings.warn(
            f"the module {type(module).__name__} holds {' and '.join(other)} tensors; D runs in float32, "
            "on a float32 copy (the module itself is unchanged)",
            UserWarning,
            stacklevel=2,
        )
        copied = copied.float()
    name = f"<in-memory {type(module).__name__}>"
    return Classifier(copied, pp, name, {}, labels=labels, keep_softmax=keep_softmax)


def _tensors(module: nn.Module):
    return itertools.chain(module.parameters(), module.buffers())


def _other_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dtype != torch.float32


def module_problem(module: nn.Module) -> str | None:
    """Why an in-memory module cannot be D, seen before it is copied; None where it can."""
    if any(t.is_meta for t in _tensors(module)):
        return (
            "its tensors are on the meta device (shapes without values); materialise and load its weights "
            "first, e.g. module.to_empty(device='cpu') then module.load_state_dict(...)"
        )
    return None


def gradient_problem(clf: Classifier) -> str | None:
    """Why D cannot be differentiated with respect to its input, which the search needs, seen on one
    input (a forward and a backward pass at batch 1); None where it can. A wrong input format or output
    shape is reported first, as such (Classifier.layout)."""
    clf.layout()
    pp = clf.preprocessing
    x = torch.zeros(1, pp.channels, pp.image_size, pp.image_size, dtype=clf.dtype, requires_grad=True)
    with torch.enable_grad():
        out, _ = Tapped(clf, [])(x)
        if not out.is_floating_point():
            return (
                f"it returns {str(out.dtype).removeprefix('torch.')} outputs, which have no gradient; "
                "it must return the logits (or scores) as floats"
            )
        if not out.requires_grad:
            return (
                "its output does not depend differentiably on its input (its forward runs under "
                "torch.no_grad() or inference_mode, detaches, or goes through numpy); the search needs "
                "the gradient of its output with respect to the image"
            )
        try:
            torch.autograd.grad(out.sum(), x)
        except RuntimeError as e:
            return f"its backward pass fails ({str(e).splitlines()[0][:160]})"
    return None


def load_classifier(
    name: str,
    weights: str | None = None,
    *,
    image_size: int | None = None,
    channels: str | None = None,
    mean=None,
    std=None,
    seed: int = 0,
    keep_softmax: bool = False,
) -> Classifier:
    """D by name or file (see the module's text). `keep_softmax`: optimise D's output as it is, a final
    Softmax, LogSoftmax or Sigmoid included (by default the search drives the scores before it)."""
    clf = _load(name, weights, image_size, channels, mean, std, seed)
    clf.keep_softmax = keep_softmax
    return clf


def _load(name, weights, image_size, channels, mean, std, seed) -> Classifier:
    sources: dict[str, str] = {}
    if name == demo.NAME:

        def build():
            return vgg_style(1, demo.PREPROCESSING.image_size, demo.CLASSES, demo.CONVS, demo.HIDDEN)

        if weights == "random":
            return Classifier(_seeded(build, seed), demo.PREPROCESSING, name, {}, labels=demo.labels())
        module = build()
        path = weights or demo.classifier_weights()
        apply_state_dict(module, state_dict_from_file(path), path)
        key = demo.source_name(path) if weights is None else path
        return Classifier(module, demo.PREPROCESSING, name, {key: sha256_file(path)}, labels=demo.labels())
    if name == "vgg16":
        module = vgg16()
        if weights is None:
            raise UsageError(
                f"{setting('model', 'vgg16')} needs {setting('weights')} (a .pth torchvision or .h5 Keras-1 "
                f"file), or {setting('weights', 'random')} for random weights"
            )
        if weights == "random":
            module = _seeded(vgg16, seed)
            default = IMAGENET_TORCHVISION
        elif weights.endswith((".h5", ".hdf5")):
            apply_state_dict(module, keras1_state_dict(weights, module), weights)
            default = IMAGENET_CAFFE
        else:
            apply_state_dict(module, state_dict_from_file(weights), weights)
            default = IMAGENET_TORCHVISION
        if weights != "random":
            sources[weights] = sha256_file(weights)
        pp = _preprocessing(default, image_size, channels, mean, std, name)
        return Classifier(module, pp, name, sources)
    if ":" in name and not os.path.exists(name):
        module = _seeded(lambda: _from_factory(name), seed) if weights == "random" else _from_factory(name)
        if weights and weights != "random":
            apply_state_dict(module, state_dict_from_file(weights), weights)
            sources[weights] = sha256_file(weights)
        default = getattr(module, "preprocessing", None)
        pp = _preprocessing(default, image_size, channels, mean, std, name)
        return Classifier(module, pp, name, sources, labels=_labels_of(module))
    if weights is not None and os.path.isfile(name):
        raise UsageError(f"classifier file {name!r} carries its own weights; leave out {setting('weights')}")
    if os.path.isfile(name) and not zipfile.is_zipfile(name):  # TorchScript archives are zip files
        return _onnx_classifier(name, image_size, channels, mean, std)
    if os.path.exists(name):
        try:
            module = torch.jit.load(name, map_location="cpu")
        except Exception as e:
            raise UsageError(
                f"classifier file {name!r} is not a TorchScript archive (truncated?): {str(e).splitlines()[0][:160]}"
            ) from None
        sources[name] = sha256_file(name)
        pp = _preprocessing(None, image_size, channels, mean, std, f"TorchScript file {name!r}")
        example = torch.randn(2, pp.channels, pp.image_size, pp.image_size, generator=torch.Generator().manual_seed(0))
        if interpretable(module, example):
            interpreted = TorchScriptClassifier(module)
            return Classifier(interpreted, pp, name, sources, tap_points=interpreted.tap_points())
        return Classifier(module, pp, name, sources, tappable=False)
    raise UsageError(f"unknown classifier {name!r}: give vgg16, an ONNX or TorchScript file, or module:factory")


def _onnx_classifier(path: str, image_size, channels, mean, std) -> Classifier:
    given = read_onnx(path)
    if image_size is not None and given.size is not None and image_size != given.size:
        raise UsageError(
            f"ONNX file {path!r} takes {given.size}x{given.size} images; drop {setting('image_size', image_size)} "
            f"(the file fixes it)"
        )
    if channels is not None and (1 if channels == "L" else 3) != given.channels:
        raise UsageError(
            f"ONNX file {path!r} takes {given.channels}-channel images; {setting('channels', channels)} does not match"
        )
    order = channels or ("L" if given.channels == 1 else "RGB")
    default = (
        Preprocessing(given.size, order, (0.0,) * given.channels, (1.0,) * given.channels)
        if given.size is not None
        else None
    )
    pp = _preprocessing(default, image_size, order, mean, std, f"ONNX file {path!r}")
    module, taps = convert_onnx(given, path)
    return Classifier(module, pp, path, {path: sha256_file(path)}, tap_points=taps)


def _labels_of(module: nn.Module) -> list[str] | None:
    """A factory's module may name its classes in a `labels` attribute (a list of strings)."""
    labels = getattr(module, "labels", None)
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple)) or not all(isinstance(n, str) for n in labels):
        raise UsageError("a classifier module's `labels` attribute must be a list of class names (strings)")
    return list(labels)


def _seeded(build, seed: int) -> nn.Module:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # the user's own modules, as `python -m` would find them
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"cannot load classifier factory {spec!r}: {e}") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise UsageError(f"classifier factory {spec!r} returned {type(module).__name__}, not a torch module")
    return module


def resolve_preprocessing(
    name: str, weights: str | None = None, *, image_size=None, channels=None, mean=None, std=None
) -> Preprocessing:
    """The input format of a classifier without loading its weights where the name tells it."""
    if name == "vgg16":
        default = IMAGENET_CAFFE if weights and weights.endswith((".h5", ".hdf5")) else IMAGENET_TORCHVISION
        return _preprocessing(default, image_size, channels, mean, std, name)
    return load_classifier(name, weights, image_size=image_size, channels=channels, mean=mean, std=std).preprocessing
