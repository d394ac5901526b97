"""Targets: what an optimisation drives up, parsed from text and turned into objective weights.

Grammar (terms joined by '+', each with an optional weight):
    class:668    channel:features.28:17    neuron:features.28:17:7:7    0.5*class:9+class:339
The objective of a target is sum_k w_k a_k over its terms; a class term reads D's output (after the
final ReLU), a channel term the mean of one channel of a layer, a neuron term one spatial value.
A layer with a [tokens, features] output (a transformer block) has its features as channels: a channel
term reads one feature's mean over the tokens, a neuron term one feature of one token
(neuron:blocks.3:17:5, token 5).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

import numpy as np

from .errors import UsageError

OUTPUT = "output"  # the layout key of D's class outputs
# D's probabilities beside its scores, where the search drives the scores before D's final softmax
# (an output of the classifier graph, not an objective layer)
PROBABILITY = "probability"
ID_PREFIX = 64  # characters of a target's text kept readable in its file name (+ 13 for the digest)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"^(?:(?P<w>{_NUMBER})\*)?(?P<kind>class|channel|neuron):(?P<rest>.+)$")
# a module path (features.28, layer3.1, 2 in a plain Sequential) or an ONNX tensor name (/layer1/Relu_output_0)
_LAYER = r"[^\s+*]+"


@dataclass(frozen=True)
class Term:
    kind: str  # class | channel | neuron
    index: int  # class index or channel index
    layer: str = OUTPUT
    y: int = -1
    x: int = -1
    weight: float = 1.0

    def text(self) -> str:
        if self.kind == "class":
            body = f"class:{self.index}"
        elif self.kind == "channel":
            body = f"channel:{self.layer}:{self.index}"
        elif self.x < 0:  # one token of a [tokens, features] layer
            body = f"neuron:{self.layer}:{self.index}:{self.y}"
        else:
            body = f"neuron:{self.layer}:{self.index}:{self.y}:{self.x}"
        if self.weight == 1.0:
            return body
        weight = f"{self.weight:g}"
        return f"{weight if float(weight) == self.weight else repr(self.weight)}*{body}"

    @property
    def place(self) -> tuple:
        return self.kind, self.layer, self.index, self.y, self.x


@dataclass(frozen=True)
class Target:
    """A weighted sum of terms (classes, channels, neurons) whose activation the search drives up.
    Targets combine as numbers do and print as the grammar that ``run --target`` takes.

    Example:
        >>> t = dgn.Class(9) + 0.5 * dgn.Channel("features.28", 17) - dgn.Neuron("features.28", 17, 7, 7)
        >>> t.text
        'class:9+0.5*channel:features.28:17+-1*neuron:features.28:17:7:7'
        >>> dgn.synthesize(model, [t, "class:3"])    # text and objects are interchangeable
    """

    terms: tuple[Term, ...]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Target({self.text!r})"

    def __add__(self, other):
        if isinstance(other, str):
            other = parse_target(other)
        if not isinstance(other, Target):
            return NotImplemented
        weights: dict[tuple, Term] = {}
        for t in self.terms + other.terms:
            seen = weights.get(t.place)
            weights[t.place] = t if seen is None else replace(seen, weight=seen.weight + t.weight)
        terms = tuple(t for t in weights.values() if t.weight != 0.0)
        if not terms:
            raise ValueError(f"{self.text} + {other.text} cancels out: no term is left")
        return Target(terms)

    __radd__ = __add__

    def __mul__(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        if k == 0 or not np.isfinite(k):
            raise ValueError(f"a target's weight must be a finite non-zero number, got {k}")
        return Target(tuple(replace(t, weight=t.weight * k) for t in self.terms))

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        if isinstance(other, str):
            other = parse_target(other)
        return self + (-other) if isinstance(other, Target) else NotImplemented

    @property
    def text(self) -> str:
        return "+".join(t.text() for t in self.terms)

    @property
    def id(self) -> str:
        """The target's file name (without extension), distinct for distinct texts on any file system
        (also a case-insensitive one) and never longer than ID_LENGTH: `class-N` for a plain class, else
        a readable prefix of the text and a digest of all of it."""
        text = self.text
        if re.fullmatch(r"class:\d{1,9}", text):
            return text.replace(":", "-")
        plain = text.replace(":", "-").replace("*", "x").replace("+", "_")
        prefix = re.sub(r"[^\w.\-]", "_", plain, flags=re.ASCII)[:ID_PREFIX].lstrip(
            ".-"
        )  # not hidden, not read as an option
        return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def key(self) -> int:
        """A stable 63-bit number derived from the text (seeds per-target random streams)."""
        return int.from_bytes(hashlib.sha256(self.text.encode()).digest()[:8], "little") >> 1

    @property
    def has_class_terms(self) -> bool:
        return any(t.kind == "class" for t in self.terms)

    @property
    def layers(self) -> set[str]:
        return {t.layer for t in self.terms if t.kind != "class"}


def _int(text: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise UsageError(f"target {spec!r}: {what} must be a non-negative integer, got {text[:40]!r}")
    if len(text.lstrip("0")) > 18:  # past any tensor's size (and Python's int-parsing limit)
        raise UsageError(f"target {spec[:80]!r}: {what} has {len(text)} digits; no classifier has that many")
    return int(text)


def parse_term(text: str, spec: str) -> Term:
    m = _TERM.match(text.strip())
    if not m:
        raise UsageError(
            f"target {spec!r}: cannot read {text!r}; write class:N, channel:LAYER:C, "
            "neuron:LAYER:C:Y:X, optionally weighted as 0.5*class:N, joined by '+'"
        )
    weight = float(m["w"]) if m["w"] else 1.0
    if not np.isfinite(weight) or weight == 0.0:
        raise UsageError(f"target {spec!r}: the weight of {text!r} must be a finite non-zero number")
    kind, rest = m["kind"], m["rest"]
    if kind == "class":
        return Term("class", _int(rest, "the class index", spec), weight=weight)
    parts = rest.rsplit(":", 3 if kind == "neuron" else 1)
    expected = (3, 4) if kind == "neuron" else (2,)
    if len(parts) not in expected or not re.fullmatch(_LAYER, parts[0]):
        form = "neuron:LAYER:C:Y:X (or neuron:LAYER:C:TOKEN)" if kind == "neuron" else "channel:LAYER:C"
        raise UsageError(f"target {spec!r}: {text!r} is not of the form {form}")
    layer, channel = parts[0], _int(parts[1], "the channel index", spec)
    if kind == "channel":
        return Term("channel", channel, layer=layer, weight=weight)
    x = _int(parts[3], "x", spec) if len(parts) == 4 else -1
    return Term("neuron", channel, layer=layer, y=_int(parts[2], "y", spec), x=x, weight=weight)


def parse_target(spec: str) -> Target:
    if not spec or not spec.strip():
        raise UsageError("empty target; write e.g. class:668")
    terms = tuple(parse_term(part, spec) for part in re.split(r"(?<![eE])\+", spec))  # not 1e+38
    seen = set()
    for t in terms:
        where = (t.kind, t.layer, t.index, t.y, t.x)
        if where in seen:
            raise UsageError(f"target {spec!r}: {t.text()!r} appears twice; merge the weights")
        seen.add(where)
    return Target(terms)


def check_target(target: Target, layout: dict[str, tuple[int, ...]], layers: list[str] | None = None) -> None:
    """Raise UsageError when a term falls outside the classifier (layout: name -> shape, no batch)."""
    n_classes = layout[OUTPUT][0]
    for t in target.terms:
        if t.kind == "class":
            if t.index >= n_classes:
                raise UsageError(
                    f"target {target.text!r}: class {t.index} is outside the classifier, "
                    f"which has classes 0..{n_classes - 1}"
                )
            continue
        if t.layer not in layout:
            known = layers if layers is not None else [n for n in layout if n != OUTPUT]
            raise UsageError(f"target {target.text!r}: unknown layer {t.layer!r}; valid layers: " + ", ".join(known))
        shape = layout[t.layer]
        addressable = len(shape) in (2, 3) or (len(shape) == 1 and t.kind == "channel")
        if not addressable:
            raise UsageError(
                f"target {target.text!r}: layer {t.layer!r} has shape {shape}, "
                "which has no channels and positions to address"
            )
        tokens = len(shape) == 2
        channels = shape[1] if tokens else shape[0]
        if t.index >= channels:
            raise UsageError(
                f"target {target.text!r}: layer {t.layer!r} has channels 0..{channels - 1}"
                + (" (the last axis of its [tokens, features] output)" if tokens else "")
            )
        if t.kind != "neuron":
            continue
        if tokens and (t.x >= 0 or t.y >= shape[0]):
            raise UsageError(
                f"target {target.text!r}: layer {t.layer!r} has [tokens, features] output "
                f"{shape}; name one neuron as neuron:{t.layer}:C:TOKEN with TOKEN 0..{shape[0] - 1}"
            )
        if not tokens and (t.x < 0 or not (t.y < shape[1] and t.x < shape[2])):
            raise UsageError(
                f"target {target.text!r}: layer {t.layer!r} has positions "
                f"y 0..{shape[1] - 1}, x 0..{shape[2] - 1}; write neuron:{t.layer}:C:Y:X"
            )


def objective_weights(
    targets: list[Target], layout: dict[str, tuple[int, ...]], lam: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-target weights over every tapped value, and the other-classes penalty per target.

    weights[name][k] has the layer's shape; a channel term spreads its weight evenly over the
    channel (so it reads the channel mean). penalty[k] is lambda for targets with a class term
    (it multiplies the sum of the classes the target does not name) and 0 otherwise.
    """
    k = len(targets)
    weights = {name: np.zeros((k, *shape), np.float32) for name, shape in layout.items()}
    penalty = np.zeros(k, np.float32)
    for row, target in enumerate(targets):
        check_target(target, layout)
        for t in target.terms:
            w = weights[t.layer][row]
            if t.kind == "class":
                w[t.index] = t.weight
            elif w.ndim == 2:  # [tokens, features]: a channel is one feature, read as its mean over tokens
                if t.kind == "channel":
                    w[:, t.index] = t.weight / w.shape[0]
                else:
                    w[t.y, t.index] = t.weight
            elif t.kind == "channel":
                w[t.index] = t.weight / (w[t.index].size or 1)
            else:
                w[t.index, t.y, t.x] = t.weight
        penalty[row] = lam if target.has_class_terms else 0.0
    return weights, penalty


def all_classes(n_classes: int) -> list[Target]:
    """One class target per class of D.

    Args:
        n_classes: D's number of classes (``Engine.num_classes``; 1000 for ImageNet).

    Returns:
        ``[Class(0), Class(1), ...]``.

    Example:
        >>> dgn.synthesize(model, dgn.all_classes(1000), out="results")
    """
    return [Target((Term("class", c),)) for c in range(n_classes)]


def Class(index: int) -> Target:  # noqa: N802 (a constructor, named as the grammar's term)
    """D's output for class `index` (after the final ReLU): ``class:INDEX``.

    Args:
        index: the class, from 0.

    Returns:
        A ``Target``; targets add, subtract and scale as numbers do.

    Example:
        >>> dgn.Class(9) + 0.5 * dgn.Class(339)     # class:9+0.5*class:339
    """
    return Target((Term("class", _checked(index, "class index")),))


def Channel(layer: str, index: int) -> Target:  # noqa: N802
    """The mean of one channel of a tapped layer (a filter): ``channel:LAYER:INDEX``.

    Args:
        layer: the layer's name in D (a module path such as ``features.28`` or ``layer3.1``, or an ONNX
            tensor name); ``export`` must tap it.
        index: the channel, from 0.

    Returns:
        A ``Target``.

    Example:
        >>> dgn.Channel("layer3", 17)                # channel:layer3:17
    """
    return Target((Term("channel", _checked(index, "channel index"), layer=_layer(layer)),))


def Neuron(layer: str, index: int, y: int, x: int | None = None) -> Target:  # noqa: N802
    """One value of a tapped layer: ``neuron:LAYER:INDEX:Y:X``, or ``neuron:LAYER:INDEX:TOKEN``.

    Args:
        layer: the layer's name in D, as for ``Channel``.
        index: the channel (or feature), from 0.
        y: the row, or the token of a [tokens, features] layer (a transformer block) when x is None.
        x: the column.

    Returns:
        A ``Target``.

    Example:
        >>> dgn.Neuron("features.28", 17, 7, 7)      # neuron:features.28:17:7:7
    """
    return Target(
        (
            Term(
                "neuron",
                _checked(index, "channel index"),
                layer=_layer(layer),
                y=_checked(y, "y"),
                x=-1 if x is None else _checked(x, "x"),
            ),
        )
    )


def as_target(target) -> Target:
    """A Target, or the grammar's text of one."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return parse_target(target)
    raise UsageError(
        f"a target is a string such as 'class:3' or made with Class/Channel/Neuron, not a {type(target).__name__}"
    )


def _checked(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _layer(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(_LAYER, name):
        raise UsageError(f"layer name {name!r}: give the name of a module or tensor of D, without spaces, '+' or '*'")
    return name


def weighted_activation(weights: dict[str, np.ndarray], acts: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the target's activation: the sum over layers of weight x activation (numpy; the torch
    step computes the same in kernels/objective.py)."""
    rows = len(acts[OUTPUT])
    return sum((weights[name] * acts[name]).reshape(rows, -1).sum(1) for name in weights)


def objective_loss(weights: dict[str, np.ndarray], penalty: np.ndarray, acts: dict[str, np.ndarray]) -> np.ndarray:
    """Per row, the loss before the regulariser: -activation + penalty x the classes the target does not name."""
    others = weights[OUTPUT] == 0
    return -weighted_activation(weights, acts) + penalty * (acts[OUTPUT] * others).sum(1)
