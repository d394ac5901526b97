"""The run specification: one validated, JSON-serialisable description shared by every path.

Defaults are the paper's (Table 1, eq. 3 and 4) for each mode; see DESIGN.md section 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

from .errors import UsageError, setting
from .generators import REGISTRY, generator
from .targets import Target, parse_target

# modes: the paper's two (untrained, pretrained) and the two classic baselines without G (pixel, maco),
# each the name of its parameterisation in generators.REGISTRY, which owns its defaults
OPTIMIZERS = ("adamax", "nesterov", "adam")
NOISE_KINDS = ("additive", "multiplicative", "none")
REGULARIZERS = ("l1-final-gamma", "l2-alpha", "l2sq-alpha", "none")
# bounded (the default, not the paper's): G's image is soft-clipped into the pixel range, so the PNG
# holds what D scored; free: the paper's G, whose image D may score far outside the range a PNG holds
# (untrained demo: activation 863 during the search, 20 on the clipped PNG; bounded 47 and 43)
# sigmoid: G's three channels are decorrelated colours squashed into the pixel range, as pixel mode's
# image is (measured best on ImageNet classifiers, bench/RESULTS.md)
IMAGE_RANGES = ("bounded", "free", "sigmoid")
# constant: the paper's; linear: sigma falls to 0 at the last step, so the search ends on the image
# D scores without noise
NOISE_SCHEDULES = ("constant", "linear")
# median: the per-pixel median of the last snapshots (the original code's); best: of those snapshots
# and their median, the one on which D scores the target highest
SNAPSHOT_PICKS = ("median", "best")
# float32: IEEE single precision everywhere. tf32: on CUDA, convolutions and matrix products in
# TensorFloat-32 on the tensor cores (10-bit mantissa: faster, ~1e-3 relative error per product); the
# CPU has no such mode and runs float32. float64: the torch reference only.
PRECISIONS = ("float32", "tf32", "float64")
ENGINE_PRECISIONS = ("float32", "tf32")
DEVICES = ("auto", "cpu", "cuda")
MAX_STEPS = 1_000_000  # per target; the paper uses 500 and 1,200
PAPER_IMAGE_SIZE = 224  # the paper's G is made for it; below it G is narrower (plan.generator_plan)
HYPER = (
    "lr",
    "beta1",
    "beta2",
    "eps",
    "momentum",
    "sigma",
    "reg_weight",
    "target_leak",
)  # numeric settings, a graph input


class Hyper(NamedTuple):
    """The numeric settings by name, in HYPER's order: the step graph takes them as one vector input."""

    lr: Any
    beta1: Any
    beta2: Any
    eps: Any
    momentum: Any
    sigma: Any
    reg_weight: Any
    target_leak: Any

    @classmethod
    def of(cls, vector) -> "Hyper":
        """Named views of a vector's entries (a tensor, an array or a list)."""
        return cls(*(vector[i] for i in range(len(HYPER))))

    @staticmethod
    def entry(vector, name: str):
        """One entry by name (a traced graph then reads only that one)."""
        return vector[HYPER.index(name)]


assert Hyper._fields == HYPER
GAUSSIAN_DROPOUT_SIGMA = math.sqrt(0.05 / 0.95)  # Keras GaussianDropout(0.05), used by the original code


@dataclass(frozen=True)
class Optimizer:
    name: str
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass(frozen=True)
class Noise:
    kind: str  # additive: f0 + sigma*n ; multiplicative: f0 * (1 + sigma*n)
    sigma: float
    schedule: str = "constant"

    def scale(self, step: int, steps: int) -> float:
        """The share of sigma at 0-based `step` of `steps`."""
        if self.schedule == "constant" or steps < 2:
            return 1.0
        return 1.0 - step / (steps - 1)


@dataclass(frozen=True)
class Regularizer:
    kind: str  # l1-final-gamma (eq. 3) | l2-alpha (eq. 4, the root) | l2sq-alpha (Keras' sum of squares)
    weight: float


@dataclass(frozen=True)
class Transforms:
    """Transformation robustness: each step D sees G's image shifted by up to `jitter` of its side,
    scaled by a factor in [1 - scale, 1 + scale] and rotated by up to `rotate` degrees, drawn per target
    and step by the seeded streams. All zero is the paper's literal method (no transforms)."""

    jitter: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.jitter or self.scale or self.rotate)

    def numbers(self) -> str:
        return f"jitter={self.jitter:g},scale={self.scale:g},rotate={self.rotate:g}"

    def text(self) -> str:
        """The preset's name, or the numbers."""
        return next((name for name, preset in TRANSFORM_PRESETS.items() if preset == self), self.numbers())


# standard: about what classic feature visualisation uses at 224 px (lucid/lucent: jitter 8 + 4 px after
# a 12 px pad, scale 0.9..1.1, rotation -10..10 degrees)
TRANSFORM_PRESETS = {"none": Transforms(), "standard": Transforms(jitter=0.05, scale=0.1, rotate=10.0)}


def parse_transforms(text) -> Transforms:
    """ "none", "standard", or "jitter=J,scale=S,rotate=DEG" (parts left out are 0)."""
    if isinstance(text, Transforms):
        return text
    if text in TRANSFORM_PRESETS:
        return TRANSFORM_PRESETS[text]
    values = {}
    for part in str(text).split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("jitter", "scale", "rotate") or name in values:
            raise UsageError(f"transforms must be none, standard or jitter=J,scale=S,rotate=DEGREES, got {text!r}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"transforms: {name} must be a number, got {value!r}") from None
    return Transforms(**values)


@dataclass(frozen=True)
class Snapshots:
    count: int = 30  # snapshots spread over the run (the original took 30)
    keep: int = 10  # the final image is the per-pixel median of the last `keep`, or the best of them
    pick: str = "median"

    def every(self, steps: int) -> int:
        return max(1, steps // self.count)

    def steps(self, steps: int) -> list[int]:
        """0-based step indices whose image is kept for the median."""
        every = self.every(steps)
        taken = [s for s in range(steps) if (s + 1) % every == 0] or [steps - 1]
        return taken[-self.keep :]


@dataclass(frozen=True)
class RunSpec:
    mode: str
    targets: tuple[str, ...] = ()
    lam: float = 0.01
    # Slope of a class target's term below zero: 1 lets a target whose logit starts negative rise
    # (the paper asks that a(c_i) > 0 be ensured); 0 is the paper's literal ReLU on the target too.
    target_leak: float = 1.0
    optimizer: Optimizer = None
    noise: Noise = None
    regularizer: Regularizer = None
    steps: int = 0
    snapshots: Snapshots = field(default_factory=Snapshots)
    seed: int = 0
    image_range: str = "bounded"
    transforms: Transforms = field(default_factory=Transforms)

    def validated(self) -> "RunSpec":
        _require(self.mode in REGISTRY, f"mode must be one of {', '.join(REGISTRY)}, got {self.mode!r}")
        targets = tuple(t.text if isinstance(t, Target) else parse_target(t).text for t in self.targets)
        _require(len(set(targets)) == len(targets), "a target is listed twice")
        _require(math.isfinite(self.lam) and self.lam >= 0, f"lambda must be >= 0, got {self.lam}")
        _require(0 <= self.target_leak <= 1, f"target leak must lie in [0, 1], got {self.target_leak}")
        o = self.optimizer
        _require(o.name in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
        _require(o.lr > 0, f"learning rate must be > 0, got {o.lr}")
        _require(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "AdaMax betas must lie in [0, 1)")
        _require(o.eps > 0, "AdaMax eps must be > 0")
        _require(0 <= o.momentum < 1, f"momentum must lie in [0, 1), got {o.momentum}")
        _require(self.noise.kind in NOISE_KINDS, f"noise must be one of {', '.join(NOISE_KINDS)}")
        gen = generator(self.mode)
        pixel = not gen.has_g
        _require(
            (self.noise.kind == "none") == pixel,
            f"{self.mode} mode has no feature vector to put noise on (noise none)"
            if pixel
            else "noise none is pixel mode's; the generator modes perturb their feature vector",
        )
        _require(self.noise.sigma >= 0, f"noise sigma must be >= 0, got {self.noise.sigma}")
        _require(
            self.noise.schedule in NOISE_SCHEDULES,
            f"noise schedule must be one of {', '.join(NOISE_SCHEDULES)}, got {self.noise.schedule!r}",
        )
        r = self.regularizer
        _require(r.kind in REGULARIZERS, f"regulariser must be one of {', '.join(REGULARIZERS)}")
        _require(r.weight >= 0, f"regulariser weight must be >= 0, got {r.weight}")
        _require(
            not (r.kind == "l1-final-gamma" and gen.has_g and not gen.trains_g),
            f"the l1-final-gamma regulariser needs {setting('mode', 'untrained')} ({self.mode} mode trains only alpha)",
        )
        _require(
            not (pixel and r.kind != "none"),
            f"the {r.kind} regulariser acts on G; {self.mode} mode has none: use {setting('regularizer', 'none')}",
        )
        _require(
            isinstance(self.steps, int) and 1 <= self.steps <= MAX_STEPS,
            f"steps must lie between 1 and {MAX_STEPS:,}, got {self.steps}",
        )
        _require(all(math.isfinite(v) for v in self.hyper()), "the run's numbers must be finite")
        s = self.snapshots
        _require(s.count >= 1 and 1 <= s.keep <= s.count, "snapshots: need count >= 1 and 1 <= keep <= count")
        _require(s.pick in SNAPSHOT_PICKS, f"snapshot pick must be one of {', '.join(SNAPSHOT_PICKS)}, got {s.pick!r}")
        _require(isinstance(self.seed, int) and 0 <= self.seed < 2**63, "seed must be an integer >= 0")
        _require(self.image_range in IMAGE_RANGES, f"image range must be one of {', '.join(IMAGE_RANGES)}")
        _require(
            not (pixel and self.image_range == "free"),
            f"{self.mode} mode's image always lies in the pixel range (a sigmoid); "
            f"{setting('image_range', 'free')} is for G",
        )
        tr = self.transforms
        _require(all(math.isfinite(v) for v in (tr.jitter, tr.scale, tr.rotate)), "transforms must be finite numbers")
        _require(0 <= tr.jitter <= 0.5, f"transforms: jitter is a share of the image side in [0, 0.5], got {tr.jitter}")
        _require(0 <= tr.scale < 1, f"transforms: scale must lie in [0, 1), got {tr.scale}")
        _require(0 <= tr.rotate <= 180, f"transforms: rotate is in degrees, 0..180, got {tr.rotate}")
        return replace(self, targets=targets)

    def structure(self) -> dict:
        """The choices baked into the exported graphs (the numbers are graph inputs)."""
        return {
            "mode": self.mode,
            "optimizer": self.optimizer.name,
            "noise kind": self.noise.kind,
            "regularizer": self.regularizer.kind,
            "image range": self.image_range,
            "transforms": "on" if self.transforms.enabled else "none",
        }

    def hyper(self) -> Hyper:
        o = self.optimizer
        return Hyper(
            o.lr, o.beta1, o.beta2, o.eps, o.momentum, self.noise.sigma, self.regularizer.weight, self.target_leak
        )

    def to_json(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @staticmethod
    def from_json(d: dict) -> "RunSpec":
        d = dict(d)
        try:
            parts = {
                "optimizer": Optimizer,
                "noise": Noise,
                "regularizer": Regularizer,
                "snapshots": Snapshots,
                "transforms": Transforms,
            }
            for key, cls in parts.items():
                if key in d:
                    d[key] = cls(**d[key])
            if "targets" in d:
                d["targets"] = tuple(d["targets"])
            known = {f.name for f in fields(RunSpec)}
            unknown = set(d) - known
            if unknown:
                raise UsageError(f"unknown spec field(s): {', '.join(sorted(unknown))}")
            base = default_spec(d["mode"])
            return replace(base, **d).validated()
        except (TypeError, KeyError) as e:
            raise UsageError(f"malformed run specification: {e}") from None


def default_spec(mode: str, image_size: int | None = None, **overrides) -> RunSpec:
    """A mode's settings (its parameterisation's defaults: the paper's Table 1 for G), with optional field
    overrides; departures: the image range is bounded (`image_range="free"` is the paper's), and in
    untrained mode for a classifier whose input size is known, generators/untrained.py's settings below
    and from 224 px (paper_spec is the letter)."""
    spec = RunSpec(mode, **generator(mode).defaults(image_size))
    return replace(spec, **overrides).validated()


def paper_spec(mode: str) -> RunSpec:
    """The paper's method to the letter: Table 1's settings, D's final ReLU on the target too (leak 0),
    G's image unbounded, no transforms."""
    if not generator(mode).paper:
        raise UsageError(
            f"{setting('paper', True)}: {mode} mode is not the paper's method; "
            f"use {setting('mode', 'untrained')} or pretrained"
        )
    return replace(default_spec(mode), image_range="free", target_leak=0.0, transforms=Transforms()).validated()


SETTINGS = (
    "paper",
    "steps",
    "seed",
    "lr",
    "momentum",
    "optimizer",
    "noise_sigma",
    "regularizer",
    "reg_weight",
    "lam",
    "target_leak",
    "image_range",
    "transforms",
    "snapshots",
    "keep",
    "pick",
    "noise_schedule",
)


def with_settings(base: RunSpec, targets=(), **settings) -> RunSpec:
    """`base` (a mode's defaults, or the spec artifacts were exported with) with the settings given
    (None = keep): the one place where the CLI's options and the Python API's keywords become a spec.
    noise_sigma is a number or "gaussian-dropout"; optimizer "adamax", "nesterov" or "adam" brings that
    optimiser's defaults; paper=True starts from the paper's literal method (paper_spec) instead of `base`."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(SETTINGS)}")
    given = {k: v for k, v in settings.items() if v is not None}
    if given.pop("paper", False):
        base = replace(paper_spec(base.mode), seed=base.seed)
    opt, noise, reg = base.optimizer, base.noise, base.regularizer
    if "optimizer" in given and given["optimizer"] != opt.name:
        if given["optimizer"] not in OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {given['optimizer']!r}")
        home = {"adamax": "untrained", "nesterov": "pretrained", "adam": "pixel"}[given["optimizer"]]
        opt = default_spec(home).optimizer
    if "lr" in given:
        opt = replace(opt, lr=float(given["lr"]))
    if "momentum" in given:
        opt = replace(opt, momentum=float(given["momentum"]))
    if "noise_sigma" in given:
        sigma = given["noise_sigma"]
        if sigma == "gaussian-dropout":
            if noise.kind != "multiplicative":  # the kind is G's structure, fixed by the mode or the export
                raise UsageError(
                    f"{setting('noise_sigma', 'gaussian-dropout')} is GaussianDropout's multiplicative noise, and "
                    f"{base.mode} mode's feature noise is {noise.kind}; give {setting('noise_sigma')} a number"
                )
            sigma = GAUSSIAN_DROPOUT_SIGMA
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise UsageError(f"noise sigma must be a number or gaussian-dropout, got {sigma!r}") from None
        noise = replace(noise, sigma=sigma)
    if "noise_schedule" in given:
        noise = replace(noise, schedule=given["noise_schedule"])
    if "regularizer" in given:
        reg = replace(reg, kind=given["regularizer"])
    if "reg_weight" in given:
        reg = replace(reg, weight=float(given["reg_weight"]))
    snap = base.snapshots
    snapshots = Snapshots(
        given.get("snapshots", snap.count), given.get("keep", snap.keep), given.get("pick", snap.pick)
    )
    return replace(
        base,
        targets=tuple(targets),
        optimizer=opt,
        noise=noise,
        regularizer=reg,
        lam=float(given.get("lam", base.lam)),
        target_leak=float(given.get("target_leak", base.target_leak)),
        steps=given.get("steps", base.steps),
        seed=given.get("seed", base.seed),
        image_range=given.get("image_range", base.image_range),
        transforms=parse_transforms(given["transforms"]) if "transforms" in given else base.transforms,
        snapshots=snapshots,
    ).validated()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)
