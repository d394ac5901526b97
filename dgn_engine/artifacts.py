"""The artifacts directory: what `export` writes and every backend reads (no torch here).

    manifest.json     format version, the backends it serves, mode, batch, graph inputs/outputs,
                      taps and layout, preprocessing, class count and names, the run spec the
                      export was made with, the generator plan, the sha256 of every source file,
                      the size and sha256 of every file here, tool versions
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
import os
from dataclasses import dataclass

from .digests import sha256_file
from .errors import UsageError
from .plan import GeneratorPlan
from .preprocessing import Preprocessing
from .records import ManifestRecord, read_json_file, validated
from .spec import HYPER, RunSpec

FORMAT_VERSION = 3  # 3: the manifest records every file's size and sha256
MANIFEST = "manifest.json"
BACKEND_FILES = {"step-graph": ("step.onnx",), "training-api": ("training.onnx", "checkpoint")}
BACKEND_GRAPHS = {"step-graph": ("step",), "training-api": ("training",)}
SHARED_GRAPHS = ("render", "classifier")


@dataclass
class Artifacts:
    path: str
    manifest: dict
    _files_checked: bool = False

    @property
    def manifest_sha256(self) -> str:
        with open(os.path.join(self.path, MANIFEST), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    @property
    def backends(self) -> list[str]:
        return self.manifest["backends"]

    def require(self, backend: str) -> None:
        if backend not in self.backends:
            raise UsageError(
                f"the artifacts in {self.path!r} hold no graphs for the {backend} backend (they serve "
                f"{', '.join(self.backends)}); export them again with --backend {backend}"
            )

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

    def require_taps(self, target) -> None:
        """Every layer a target (a targets.Target) reads must be tapped by these graphs."""
        missing = sorted(target.layers - set(self.manifest["taps"]))
        if missing:
            raise UsageError(
                f"target {target.text!r} reads layer {missing[0]!r}, which these artifacts do not tap "
                f"(taps: {', '.join(self.manifest['taps']) or 'none'}); export again with --taps "
                f"{missing[0]}"
            )

    def check_files(self) -> None:
        """Every file's sha256 against the manifest's, streamed (once per Artifacts object)."""
        if self._files_checked:
            return
        for file, entry in sorted(self.manifest["files"].items()):
            if sha256_file(os.path.join(self.path, file)) != entry["sha256"]:
                raise UsageError(
                    f"artifacts file {os.path.join(self.path, file)!r} is not the file the export "
                    "wrote (its sha256 differs): it was changed or damaged; export the artifacts again"
                )
        self._files_checked = True

    def graph(self, name: str) -> str:
        return os.path.join(self.path, self.manifest["graphs"][name]["file"])

    def check_spec(self, spec: RunSpec) -> None:
        """The numbers of a spec are graph inputs; its structure is baked into the graphs."""
        fixed = self.spec.structure()
        for what, ours in spec.structure().items():
            if ours != fixed[what]:
                raise UsageError(
                    f"the artifacts in {self.path!r} were exported with {what} {fixed[what]}, "
                    f"not {ours}; export again with the settings you want"
                )


def load_artifacts(path: str) -> Artifacts:
    """The artifacts folder, its manifest checked field by field and every file it names present with
    the size it was written with (a cheap stat; `Artifacts.check_files` compares the digests)."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise UsageError(f"artifacts folder {path!r} does not exist (make one with dgn-engine export)")
    if not os.path.isfile(manifest_path):
        raise UsageError(f"{path!r} holds no {MANIFEST}; it is not an artifacts folder (dgn-engine export)")
    raw = read_json_file(manifest_path, "artifacts manifest", "export the artifacts again")
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise UsageError(
            f"artifacts in {path!r} have format version {version}, this dgn-engine reads "
            f"version {FORMAT_VERSION}; export them again with this version"
        )
    manifest = validated(raw, ManifestRecord, manifest_path, "artifacts manifest").model_dump(by_alias=True)
    if manifest["hyper"] != list(HYPER):
        raise UsageError(
            f"artifacts in {path!r} take other run settings ({manifest['hyper']}) than this "
            "dgn-engine gives; export them again with this version"
        )
    art = Artifacts(path, manifest)
    missing_graphs = [
        g
        for g in SHARED_GRAPHS + tuple(g for b in art.backends for g in BACKEND_GRAPHS[b])
        if g not in manifest["graphs"]
    ]
    if missing_graphs:
        raise UsageError(
            f"artifacts manifest {manifest_path!r} names no {missing_graphs[0]} graph; export the artifacts again"
        )
    try:  # the parts other code builds objects from
        art.spec, art.plan, art.preprocessing  # noqa: B018
    except (UsageError, KeyError, TypeError, ValueError) as e:
        raise UsageError(
            f"artifacts manifest {manifest_path!r} is damaged ({str(e)[:160]}); export the artifacts again"
        ) from None
    needed = {manifest["graphs"][g]["file"] for g in SHARED_GRAPHS}
    for backend in art.backends:
        needed.update(BACKEND_FILES[backend])
    for file in sorted(needed | set(manifest["files"])):
        where = os.path.join(path, file)
        if not os.path.isfile(where):
            raise UsageError(f"artifacts in {path!r} are incomplete: {file} is missing; export them again")
        entry = manifest["files"].get(file)
        if entry is None:
            raise UsageError(
                f"artifacts manifest {manifest_path!r} records no size and digest for {file}; "
                "export the artifacts again"
            )
        if os.path.getsize(where) != entry["size"]:
            raise UsageError(
                f"artifacts file {where!r} has {os.path.getsize(where)} bytes, the export wrote "
                f"{entry['size']}: it was changed or cut short; export the artifacts again"
            )
    return art
