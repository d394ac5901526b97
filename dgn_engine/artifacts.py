"""The artifacts directory: what `export` writes and every backend reads (no torch here).

    manifest.json     format version, the backends it serves, mode, batch, graph inputs/outputs,
                      taps and layout, preprocessing, class count and names, what D's class
                      outputs are (scores taken before its final Softmax), the run spec the
                      export was made with, the generator plan, the sha256 of every source file,
                      the size and sha256 of every file here, tool versions
    step.onnx         (step-graph backend) one optimisation step of K targets: (state, noise,
                      weights, penalty, hyper) -> (new state, loss, activation, image)
    training.onnx     (training-api backend) onnxruntime-training's model of G + D + objective:
    checkpoint        (noise, weights, penalty, hyper) -> (loss, per-target loss, activation, image)
                      and the gradients of the trainables, whose values the checkpoint holds
    render.onnx       G alone: (trainables, noise) -> image
    classifier.onnx   D alone: image -> class outputs (after the final ReLU) and tapped layers, and
                      D's probabilities where its scores are taken before its final normalisation
    weights.bin       every constant tensor of the three graphs, stored once (ONNX external data)
The initial state of a target is not stored: it is derived from (seed, target) by
dgn_engine.state.initial_state, the same code for every backend.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from .digests import sha256_file, sha256_json
from .errors import UsageError, setting
from .files import Folder, reason
from .plan import GeneratorPlan
from .preprocessing import Preprocessing
from .records import JSON_LIMIT, ManifestRecord, parse_json, validated
from .spec import HYPER, RunSpec
from .state import state_shapes
from .targets import OUTPUT

FORMAT_VERSION = 4  # 3: the manifest records every file's size and sha256; 4: pixel mode's spectrum [C, 2, S, S//2+1]
MANIFEST = "manifest.json"
RESULTS_INDIFFERENT = ("export_seconds", "versions", "sources", "sha256", "labels")
LOCK = ".lock"  # readers share it, an export holds it alone; not an artifact (not in the manifest's files)
LOCK_WAIT_S = 600  # how long an export waits for the runs loading the folder (seconds each), and they for it
BACKEND_FILES = {"step-graph": ("step.onnx",), "training-api": ("training.onnx", "checkpoint")}
BACKEND_GRAPHS = {"step-graph": ("step",), "training-api": ("training",)}
SHARED_GRAPHS = ("render", "classifier")


@dataclass
class Artifacts:
    path: str
    manifest: dict
    manifest_sha256: str  # of the manifest's bytes as loaded
    _checked: dict = field(default_factory=dict)  # file -> (inode, size, mtime) when its digest matched

    @property
    def backends(self) -> list[str]:
        return self.manifest["backends"]

    def require(self, backend: str) -> None:
        if backend not in self.backends:
            raise UsageError(
                f"the artifacts in {self.path!r} hold no graphs for the {backend} backend (they serve "
                f"{', '.join(self.backends)}); export them again with {setting('backend', backend)}"
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

    @property
    def probabilities(self) -> bool:
        """Whether the classifier graph reports D's probabilities beside the scores it was searched on."""
        return bool((self.manifest.get("scores") or {}).get("taken_before"))

    def require_taps(self, target) -> None:
        """Every layer a target (a targets.Target) reads must be tapped by these graphs."""
        missing = sorted(target.layers - set(self.manifest["taps"]))
        if missing:
            raise UsageError(
                f"target {target.text!r} reads layer {missing[0]!r}, which these artifacts do not tap "
                f"(taps: {', '.join(self.manifest['taps']) or 'none'}); export again with "
                f"{setting('taps', missing[0])}"
            )

    @property
    def results_digest(self) -> str:
        """The manifest's digest without what does not change a result: the export's timing and tool
        versions, the paths and labels it was given (labels only name classes; `run` renames on resume)."""
        kept = {k: v for k, v in self.manifest.items() if k not in RESULTS_INDIFFERENT}
        return sha256_json(kept)

    def reading(self):
        """Held while a run checks and loads the graphs: an export into this folder waits for it, so
        every graph a run loads is of one export (see `folder_lock`)."""
        return folder_lock(self.path, exclusive=False)

    def check_files(self) -> None:
        """Every file's sha256 against the manifest's, streamed (again only for a file whose inode,
        size or time changed since this object last checked it). Call it under `reading()`."""
        self._same_export()
        for file, entry in sorted(self.manifest["files"].items()):
            where = os.path.join(self.path, file)
            st = os.stat(where, follow_symlinks=False)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._checked.get(file) == signature:
                continue
            if sha256_file(where) != entry["sha256"]:
                raise UsageError(
                    f"artifacts file {where!r} is not the file the export "
                    "wrote (its sha256 differs): it was changed or damaged; export the artifacts again"
                )
            self._checked[file] = signature

    def _same_export(self) -> None:
        with Folder.open(self.path, what="artifacts folder") as folder:
            data = folder.read(MANIFEST, JSON_LIMIT, "artifacts manifest")
        if hashlib.sha256(data).hexdigest() != self.manifest_sha256:
            raise UsageError(
                f"the artifacts in {self.path!r} were exported again after they were loaded; load them again "
                "(run the command again)"
            )

    def read_files(self) -> dict[str, bytes]:
        """The manifest and every file it lists, as bytes, each checked against its digest (what Ray
        ships to its workers). Call it under `reading()`."""
        self._same_export()
        with Folder.open(self.path, what="artifacts folder") as folder:
            files = {MANIFEST: folder.read(MANIFEST, JSON_LIMIT, "artifacts manifest")}
            for file, entry in sorted(self.manifest["files"].items()):
                data = folder.read(file, entry["size"], "artifacts file")
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise UsageError(
                        f"artifacts file {folder.where(file)!r} is not the file the export wrote (its sha256 "
                        "differs): it was changed or damaged; export the artifacts again"
                    )
                files[file] = data
        return files

    @property
    def weights_bytes(self) -> int:
        """The size of the constants the graphs share (weights.bin), as the manifest records it."""
        return int(self.manifest["files"].get("weights.bin", {}).get("size", 0))

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


MEMORY_SHARE = 0.9  # of the machine's memory, the most a manifest's state may ask for
FILE_NAME = re.compile(r"[A-Za-z0-9_][\w.\-]{0,127}")  # a plain name in the artifacts folder


def load_artifacts(path: str) -> Artifacts:
    """The artifacts folder, its manifest checked field by field and every file it names present with
    the size it was written with (a cheap stat; `Artifacts.check_files` compares the digests).

    Every file the manifest names must be a plain file directly in the folder (no path, no link) and be
    listed in `files` with its size and digest; anything else is refused in one line that says nothing
    about what lies outside the folder."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise UsageError(f"artifacts folder {path!r} does not exist (make one with dgn-engine export)")
    with Folder.open(path, what="artifacts folder") as folder:
        if folder.kind(MANIFEST) is None:
            raise UsageError(f"{path!r} holds no {MANIFEST}; it is not an artifacts folder (dgn-engine export)")
        remedy = "export the artifacts again"
        data = folder.read(MANIFEST, JSON_LIMIT, "artifacts manifest")
        raw = parse_json(data, manifest_path, "artifacts manifest", remedy)
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if version != FORMAT_VERSION:
            raise UsageError(
                f"artifacts in {path!r} have format version {version!r:.20}, this dgn-engine reads "
                f"version {FORMAT_VERSION}; export them again with this version"
            )
        manifest = validated(raw, ManifestRecord, manifest_path, "artifacts manifest").model_dump(by_alias=True)
        if manifest["scores"] is None:  # a D without a final normalisation: its manifest is as it was written
            del manifest["scores"]
        if manifest["hyper"] != list(HYPER):
            raise UsageError(
                f"artifacts in {path!r} take other run settings ({manifest['hyper']}) than this "
                "dgn-engine gives; export them again with this version"
            )
        art = Artifacts(path, manifest, hashlib.sha256(data).hexdigest())
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
            _check_state(art)
        except (UsageError, KeyError, TypeError, ValueError, OverflowError) as e:
            raise UsageError(
                f"artifacts manifest {manifest_path!r} is damaged ({str(e)[:160]}); export the artifacts again"
            ) from None
        needed = {manifest["graphs"][g]["file"] for g in SHARED_GRAPHS}
        for backend in art.backends:
            needed.update(BACKEND_FILES[backend])
        needed.update(entry["file"] for entry in manifest["graphs"].values())
        for file in sorted(needed | set(manifest["files"])):
            if not FILE_NAME.fullmatch(file) or file == MANIFEST:
                raise UsageError(
                    f"artifacts manifest {manifest_path!r} names a file that is not a plain name in its folder; "
                    "export the artifacts again"
                )
            entry = manifest["files"].get(file)
            if entry is None:
                raise UsageError(
                    f"artifacts manifest {manifest_path!r} records no size and digest for {file}; "
                    "export the artifacts again"
                )
            kind = folder.kind(file)
            if kind != "file":
                what = "is missing" if kind is None else "is a link or not a plain file"
                raise UsageError(f"artifacts in {path!r} are incomplete: {file} {what}; export them again")
            size = os.stat(file, dir_fd=folder.fd, follow_symlinks=False).st_size
            if size != entry["size"]:
                raise UsageError(
                    f"artifacts file {os.path.join(path, file)!r} has {size} bytes, the export wrote "
                    f"{entry['size']}: it was changed or cut short; export the artifacts again"
                )
    return art


def _check_state(art: Artifacts) -> None:
    """The state the manifest lists is the one its plan makes, and fits in this machine's memory."""
    m = art.manifest
    if m["num_classes"] != art.layout.get(OUTPUT, (None,))[0]:
        raise ValueError(f"num_classes {m['num_classes']} but an output layout of {art.layout.get(OUTPUT)}")
    expected = state_shapes(art.mode, art.plan, art.spec.optimizer.name)
    listed = {e["name"]: tuple(e["shape"]) for e in m["state"]}
    if listed != expected:
        wrong = next((n for n in listed if listed[n] != expected.get(n)), None) or next(
            iter(set(expected) - set(listed))
        )
        raise ValueError(f"state {wrong!r} is not what the plan makes")
    floats = m["batch"] * sum(math.prod(s) for s in expected.values())
    memory = _memory_bytes()
    if memory and floats * 4 > MEMORY_SHARE * memory:
        raise ValueError(f"its state needs {floats * 4 / 2**30:.0f} GiB, more than this machine's memory")


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@contextmanager
def folder_lock(path: str, exclusive: bool, wait_s: float = LOCK_WAIT_S):
    """An OS lock (flock) on the artifacts folder's .lock: runs loading the graphs share it, an export
    replacing them holds it alone. The export makes the file; a folder without one (the demo's shipped
    artifacts) is read without a lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with Folder.open(path, what="artifacts folder") as folder:
        try:  # a reader only opens it (a shared lock needs no write access); the export makes it
            fd = folder.open_file(LOCK, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY)
        except FileNotFoundError:  # made before exports locked, or shipped read-only: no export runs there
            yield
            return
        except OSError as e:
            raise UsageError(f"the lock file {folder.where(LOCK)!r} is {reason(e)}; remove it") from None
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        doing = "loaded by a run" if exclusive else "exported into"
                        raise UsageError(
                            f"the artifacts folder {path!r} has been {doing} for {wait_s:.0f} s; try again when "
                            "that is done, or use another folder"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock
