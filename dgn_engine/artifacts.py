"""The artifacts directory: what `export` writes and every backend reads (no torch here).

    manifest.json     format version, the backends it serves, mode, batch, graph inputs/outputs,
                      taps and layout, preprocessing, class count and names, the run spec the
                      export was made with, the generator plan, the sha256 of every source file,
                      tool versions
    step.onnx         (step-graph backend) one optimisation step of K targets: (state, noise,
                      weights, penalty, hyper) -> (new state, loss, activation, image)
    training.onnx     (training-api backend) onnxruntime-training's model of G + D + objective:
    checkpoint        (noise, weights, penalty, hyper) -> (loss, per-target loss, activation, image)
                      and the gradients of the trainables, whose values the checkpoint holds
    render.onnx       G alone: (trainables, noise) -> image
    classifier.onnx   D alone: image -> class outputs (after the final ReLU) and tapped layers
    weights.bin       every constant tensor of the three graphs, stored once (ONNX external data)
The initial state of a target is not stored: it is derived from (seed, target) by
dgn_engine.state.initial_state, the same code for every backend.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from .errors import UsageError
from .plan import GeneratorPlan
from .preprocessing import Preprocessing
from .spec import HYPER, RunSpec

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BACKEND_FILES = {"step-graph": ("step.onnx",), "training-api": ("training.onnx", "checkpoint")}
SHARED_GRAPHS = ("render", "classifier")


@dataclass
class Artifacts:
    path: str
    manifest: dict

    @property
    def manifest_sha256(self) -> str:
        with open(os.path.join(self.path, MANIFEST), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    @property
    def backends(self) -> list[str]:
        return self.manifest["backends"]

    def require(self, backend: str) -> None:
        if backend not in self.backends:
            raise UsageError(f"the artifacts in {self.path!r} hold no graphs for the {backend} backend (they serve "
                             f"{', '.join(self.backends)}); export them again with --backend {backend}")

    @property
    def mode(self) -> str:
        return self.manifest["mode"]

    @property
    def batch(self) -> int:
        return self.manifest["batch"]

    @property
    def plan(self) -> GeneratorPlan:
        return GeneratorPlan.from_json(self.manifest["plan"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_json(self.manifest["preprocessing"])

    @property
    def spec(self) -> RunSpec:
        """The settings the graphs were exported with (structure fixed, numbers defaults)."""
        return RunSpec.from_json(self.manifest["spec"])

    @property
    def layout(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in self.manifest["layout"].items()}

    @property
    def labels(self) -> list[str] | None:
        return self.manifest.get("labels")

    def graph(self, name: str) -> str:
        return os.path.join(self.path, self.manifest["graphs"][name]["file"])

    def check_spec(self, spec: RunSpec) -> None:
        """The numbers of a spec are graph inputs; its structure is baked into the graphs."""
        fixed = self.spec
        for what, ours, theirs in (("mode", spec.mode, fixed.mode),
                                   ("optimizer", spec.optimizer.name, fixed.optimizer.name),
                                   ("noise kind", spec.noise.kind, fixed.noise.kind),
                                   ("regularizer", spec.regularizer.kind, fixed.regularizer.kind),
                                   ("image range", spec.image_range, fixed.image_range)):
            if ours != theirs:
                raise UsageError(f"the artifacts in {self.path!r} were exported with {what} {theirs}, "
                                 f"not {ours}; export again with the settings you want")


def load_artifacts(path: str) -> Artifacts:
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise UsageError(f"artifacts folder {path!r} does not exist (make one with dgn-engine export)")
    if not os.path.isfile(manifest_path):
        raise UsageError(f"{path!r} holds no {MANIFEST}; it is not an artifacts folder (dgn-engine export)")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{manifest_path!r} cannot be read: {e}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise UsageError(f"artifacts in {path!r} have format version {version}, this dgn-engine reads "
                         f"version {FORMAT_VERSION}; export them again with this version")
    if manifest.get("hyper") != list(HYPER):
        raise UsageError(f"artifacts in {path!r} take other run settings ({manifest.get('hyper')}) than this "
                         "dgn-engine gives; export them again with this version")
    art = Artifacts(path, manifest)
    files = [manifest["graphs"][name]["file"] for name in SHARED_GRAPHS]
    for backend in art.backends:
        files += BACKEND_FILES[backend]
    for file in files:
        if not os.path.isfile(os.path.join(path, file)):
            raise UsageError(f"artifacts in {path!r} are incomplete: {file} is missing; export them again")
    return art
