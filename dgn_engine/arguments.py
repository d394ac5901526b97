"""The Python API's arguments: one validation layer in front of every public function of api.py.

`checked` wraps a function in pydantic's `validate_call` over the types below. Each type is one plain
validator that says what it takes, so that a bad argument is refused before the function does any work,
with one ArgumentError (a UsageError: the CLI prints it as one line and exits 2) naming the call, the
argument, its value and what is expected:

    synthesize(image_size=32.5): expected an integer from 8 to 2,048

Nothing is coerced from text: `image_size="32"` or `lr="0.1"` is refused (a notebook gives numbers),
while numpy and 0-d torch scalars are taken as the numbers they are. The settings (`**settings`) are
typed too, and an unknown one is refused by name. Checks between arguments (a decoder outside
pretrained mode, mean and std of different lengths, ...) raise the same ArgumentError through `refuse`.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import operator
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, NoReturn

from pydantic import ConfigDict, PlainValidator, ValidationError, validate_call, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from .errors import UsageError
from .generators import REGISTRY
from .preprocessing import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from .spec import (
    DEVICES,
    ENGINE_PRECISIONS,
    IMAGE_RANGES,
    MAX_STEPS,
    NOISE_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    REGULARIZERS,
    SETTINGS,
    SNAPSHOT_PICKS,
    RunSpec,
    Transforms,
    parse_transforms,
)

MAX_BATCH = 4096  # as the CLI's --batch
MAX_THREADS = 4096  # as the CLI's --threads
BACKENDS = ("step-graph", "training-api", "torch")
ENGINE_BACKENDS = ("step-graph", "training-api")  # what an artifacts folder is exported for
DISPLAYS = ("model", "contrast", "original")
CHANNEL_ORDERS = ("RGB", "BGR", "L")


class ArgumentError(UsageError):
    """A bad argument to the Python API: one line naming the call, the argument, its value and what
    is expected. A UsageError, so that the CLI reports it as its own errors (one line, exit 2)."""


def refuse(call: str, name: str, value: Any, problem: str) -> NoReturn:
    """Raise the ArgumentError of `call`'s argument `name` (checks between arguments use it too)."""
    raise ArgumentError(f"{call}({name}={shown(value)}): {problem}")


def shown(value: Any) -> str:
    """A value as the message shows it: its repr, short, on one line."""
    if _is_module(value):
        return f"<{type(value).__name__} module>"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    if "\n" in text:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _is_module(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a module exists only where torch was imported: never import it here
    return torch is not None and isinstance(value, torch.nn.Module)


# --- the types: each one a plain validator that returns the value to use, or says what it takes ---


def _fail(problem: str) -> NoReturn:
    raise PydanticCustomError("dgn_argument", "{problem}", {"problem": problem})


def _typed(check: Callable[[Any], Any]) -> Any:
    return Annotated[Any, PlainValidator(check)]


def _number(value: Any) -> float | None:
    """A finite real number (int, float, numpy or 0-d torch scalar), else None; never text or bool."""
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
        return None
    if not isinstance(value, numbers.Real) and not hasattr(type(value), "__float__"):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _integer(value: Any) -> int | None:
    """An integer (int, numpy or 0-d torch integer), else None; never text, bool or a float."""
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def integer(lo: int, hi: int | None = None, expected: str | None = None) -> Any:
    """An integer in [lo, hi]."""
    expected = expected or (f"an integer from {lo:,} to {hi:,}" if hi is not None else f"an integer >= {lo}")

    def check(value):
        n = _integer(value)
        if n is None or n < lo or (hi is not None and n > hi):
            _fail(f"expected {expected}")
        return n

    return _typed(check)


def number(expected: str, ok: Callable[[float], bool] = lambda x: True) -> Any:
    """A finite real number for which ok(x) holds; `expected` says which."""

    def check(value):
        x = _number(value)
        if x is None or not ok(x):
            _fail(f"expected {expected}")
        return x

    return _typed(check)


def choice(values: Iterable[str]) -> Any:
    """One of `values` (strings; a mapping is read at each check, so that names registered later count)."""
    values = values if isinstance(values, Mapping) else tuple(values)

    def check(value):
        if not isinstance(value, str) or value not in values:
            _fail("expected one of " + ", ".join(repr(v) for v in values))
        return value

    return _typed(check)


def _flag(value):
    if not isinstance(value, bool):
        _fail("expected True or False")
    return value


def path(expected: str = "a path (str or os.PathLike)") -> Any:
    """A file or folder path, as a str."""

    def check(value):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            _fail(f"expected {expected}")
        return value

    return _typed(check)


def _items(value) -> list | None:
    """The items of a list-like value (list, tuple, numpy array, generator...); None for text, mappings
    and non-iterables."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    return list(value)


def names(expected: str, allowed: Iterable[str] | None = None, single: bool = False) -> Any:
    """A list of strings (each one of `allowed`, where given); with `single`, one string stands for a
    list of one."""
    allowed = tuple(allowed) if allowed is not None else None

    def check(value):
        items = [value] if single and isinstance(value, str) else _items(value)
        if items is None or not all(isinstance(i, str) for i in items):
            _fail(f"expected {expected}")
        if allowed is not None and (not items or any(i not in allowed for i in items)):
            _fail(f"expected {expected}")
        return [str(i) for i in items]

    return _typed(check)


def channel_values(expected: str, ok: Callable[[float], bool] = lambda x: True) -> Any:
    """One finite number per channel: a list or tuple of 1 (L) or 3 (RGB, BGR)."""

    def check(value):
        items = _items(value)
        values = [_number(v) for v in items] if items is not None else None
        if values is None or len(values) not in (1, 3) or any(x is None or not ok(x) for x in values):
            _fail(f"expected {expected}")
        return tuple(values)

    return _typed(check)


def _model(value):
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    elif _is_module(value):
        return value
    _fail(
        "expected a torch.nn.Module, a TorchScript or ONNX file, an artifacts folder, or a name "
        "('vgg16', 'demo', 'module:factory')"
    )


def _artifacts(value):
    from .artifacts import Artifacts

    if isinstance(value, Artifacts):
        return value
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    _fail("expected an artifacts folder (a path, made by dgn.export or dgn-engine export)")


def _targets(value):
    from .targets import Target, as_target

    items = [value] if isinstance(value, (str, Target)) else _items(value)
    if items is None:
        _fail("expected a target ('class:3', dgn.Class(3)) or a list of them (dgn.all_classes(10))")
    try:
        found = list(dict.fromkeys(as_target(t) for t in items))
    except UsageError as e:
        _fail(str(e))
    if not found:
        _fail("no targets: give e.g. 'class:3', dgn.Class(3) or dgn.all_classes(10)")
    return found


def _ray(value):
    if value is True or (isinstance(value, str) and value.strip()):
        return value
    _fail("expected True, 'local', 'auto', 'ray://HOST:PORT' or 'HOST:PORT'")


def _transforms(value):
    if not isinstance(value, (str, Transforms)):
        _fail("expected 'none', 'standard' or 'jitter=J,scale=S,rotate=DEG'")
    try:
        return parse_transforms(value)
    except UsageError as e:
        _fail(str(e))


def _noise_sigma(value):
    if value == "gaussian-dropout" and isinstance(value, str):
        return value
    x = _number(value)
    if x is None or x < 0:
        _fail("expected a number >= 0 or 'gaussian-dropout'")
    return x


def _results(value):
    from .results import Result

    items = _items(value)
    if not items or not all(isinstance(r, Result) for r in items):
        _fail("expected a non-empty list of Result objects (what synthesize and Engine.run return)")
    return items


def _spec(value):
    if not isinstance(value, RunSpec):
        _fail("expected a RunSpec (spec.default_spec, spec.with_settings)")
    return value


def _classifier(value):
    if not (hasattr(value, "preprocessing") and hasattr(value, "name")):
        _fail("expected a Classifier (export.classifiers)")
    return value


def _callable(value):
    if not callable(value):
        _fail("expected a function taking one line of text")
    return value


def _shard(value):
    items = _items(value)
    parts = [_integer(v) for v in items] if items is not None else None
    if not parts or len(parts) != 2 or None in parts or not 0 <= parts[0] < parts[1]:
        _fail("expected (I, N), the I-th of N shards counted from 0")
    return (parts[0], parts[1])


Model = _typed(_model)
ArtifactsFolder = _typed(_artifacts)
Targets = _typed(_targets)
Flag = _typed(_flag)
Path = path()
Weights = path("a weights file, or 'random'")
Mode = choice(REGISTRY)  # generators/: a parameterisation registered there
Device = choice(DEVICES)
Backend = choice(BACKENDS)
EngineBackend = choice(ENGINE_BACKENDS)
EngineBackends = names(
    f"a list of backends, each one of {', '.join(repr(b) for b in ENGINE_BACKENDS)}", ENGINE_BACKENDS, single=True
)
Precision = choice(PRECISIONS)
EnginePrecision = choice(ENGINE_PRECISIONS)
Display = choice(DISPLAYS)
Channels = choice(CHANNEL_ORDERS)
ImageSize = integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
Steps = integer(1, MAX_STEPS)
Seed = integer(0, 2**63 - 1, "an integer >= 0 (below 2**63)")
Batch = integer(1, MAX_BATCH)
Threads = integer(1, MAX_THREADS)
Workers = integer(1)
Count = integer(1, MAX_STEPS)
Columns = integer(1, 1000)
Tile = integer(8, 4096)
Mean = channel_values("one finite number per channel: a list of 1 (L) or 3 (RGB, BGR), e.g. (0.5, 0.5, 0.5)")
Std = channel_values(
    "one number > 0 per channel: a list of 1 (L) or 3 (RGB, BGR), e.g. (0.25, 0.25, 0.25)", lambda x: x > 0
)
Labels = names("a list of class names (strings), one per class")
Taps = names("a list of layer names (strings), e.g. ['features.28']", single=True)
Layers = names("a list of layer names (strings)")
GWidth = number("a finite number > 0", lambda x: x > 0)
Ray = _typed(_ray)
Results = _typed(_results)
Spec = _typed(_spec)
ClassifierArg = _typed(_classifier)
Log = _typed(_callable)
Shard = _typed(_shard)


Lr = number("a finite number > 0", lambda x: x > 0)
Momentum = number("a number in [0, 1)", lambda x: 0 <= x < 1)
Optimizer = choice(OPTIMIZERS)
NoiseSigma = _typed(_noise_sigma)
Regularizer = choice(REGULARIZERS)
NonNegative = number("a finite number >= 0", lambda x: x >= 0)
Share = number("a number in [0, 1]", lambda x: 0 <= x <= 1)
ImageRange = choice(IMAGE_RANGES)
TransformsArg = _typed(_transforms)
Pick = choice(SNAPSHOT_PICKS)
NoiseSchedule = choice(NOISE_SCHEDULES)


@with_config(ConfigDict(extra="forbid"))
class MethodSettings(TypedDict, total=False):
    """The settings synthesize takes by keyword (steps and seed are its own arguments); None keeps the default."""

    paper: Flag | None
    lr: Lr | None
    momentum: Momentum | None
    optimizer: Optimizer | None
    noise_sigma: NoiseSigma | None
    regularizer: Regularizer | None
    reg_weight: NonNegative | None
    lam: NonNegative | None
    target_leak: Share | None
    image_range: ImageRange | None
    transforms: TransformsArg | None
    snapshots: Count | None
    keep: Count | None
    pick: Pick | None
    noise_schedule: NoiseSchedule | None


@with_config(ConfigDict(extra="forbid"))
class ExportSettings(MethodSettings, total=False):
    """export's settings (seed is its own argument)."""

    steps: Steps | None


@with_config(ConfigDict(extra="forbid"))
class RunSettings(ExportSettings, total=False):
    """Engine.run's settings: every one spec.with_settings takes."""

    seed: Seed | None


assert set(RunSettings.__annotations__) == set(SETTINGS), "arguments.RunSettings and spec.SETTINGS differ"


# --- the wrapper ---


class _RaisedInside(Exception):
    """Carries a pydantic ValidationError raised by the function's own work (a record read back, ...)
    past the wrapper, which reports only the arguments' own."""


def checked(fn: Callable) -> Callable:
    """`fn` with its arguments validated by their annotations (pydantic's validate_call) before it runs;
    a bad one raises ArgumentError."""
    call = fn.__qualname__.split("<locals>.")[-1].removesuffix(".__init__")
    params = list(inspect.signature(fn).parameters.values())

    @functools.wraps(fn)
    def body(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValidationError as e:
            raise _RaisedInside(e) from None

    validated = validate_call(body, config=ConfigDict(arbitrary_types_allowed=True))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return validated(*args, **kwargs)
        except _RaisedInside as e:
            raise e.args[0] from None
        except ValidationError as e:
            raise ArgumentError(_message(call, params, e, args, kwargs)) from None

    return wrapper


def _message(call: str, params: list[inspect.Parameter], error: ValidationError, args, kwargs) -> str:
    """One line for the refused arguments (each one, in the order given)."""
    lines = [_one(call, params, e, args, kwargs) for e in error.errors(include_url=False)]
    return "; ".join(dict.fromkeys(lines))


def _one(call: str, params: list[inspect.Parameter], error: dict, args, kwargs) -> str:
    kind, loc, value = error["type"], error["loc"], error.get("input")
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if loc and isinstance(loc[0], int):
        if kind == "unexpected_positional_argument":
            first = [n for n in named if n != "self"]
            return f"{call}() takes at most {len(first)} arguments by position ({', '.join(first)}); name the others"
        name = named[loc[0]] if loc[0] < len(named) else f"argument {loc[0] + 1}"
        value = args[loc[0]] if loc[0] < len(args) else value
    else:
        name = str(loc[0]) if loc else "?"
        value = kwargs.get(name, value)
    if kind == "missing_argument":
        return f"{call}() needs the argument {name}"
    if kind == "extra_forbidden":
        return f"{call}({name}={shown(value)}): unknown setting; known: {', '.join(SETTINGS)}"
    if kind == "unexpected_keyword_argument":
        known = ", ".join(p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD)
        return f"{call}({name}={shown(value)}): unknown argument; known: {known}"
    if kind == "multiple_argument_values":
        return f"{call}() got {name} twice (by position and by name)"
    return f"{call}({name}={shown(value)}): {error['msg']}"


# --- checks on folders (the output folder, the export cache) ---


def folder_problem(path: str, writable: bool = True) -> str | None:
    """Why `path` cannot be (or become) a folder, or with `writable` a writable one, without creating
    it; None where it can."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot be created: {existing!r} is a file"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        if existing == os.path.abspath(path):
            return "is read-only"
        return f"cannot be created in {existing!r}, which is read-only"
    return None


def check_out(call: str, out: str | None) -> None:
    """The output folder `out` (None: a temporary one) can be written."""
    problem = folder_problem(out) if out is not None else None
    if problem:
        refuse(call, "out", out, f"the folder {problem}; expected a writable folder (created if missing)")
