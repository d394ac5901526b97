"""Every file dgn-engine reads back, checked in one place: the artifacts' manifest, a results folder's
run.json and target JSON files, written PNGs, and the text files a user names (labels, targets).

A file that is unreadable, not what it should be, or edited into nonsense gives one line naming the
file and the field (a UsageError), never a traceback. The schemas are pydantic models: types, ranges
and required fields are declared once, and pydantic's error says which field is wrong and why.
Unknown extra fields are allowed (newer files stay readable where nothing they need changed).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import UsageError, setting
from .files import Folder, read_plain_file
from .generators import REGISTRY

SHA256 = r"^[0-9a-f]{64}$"
MAX_BATCH = 4096  # targets per graph call: far past what any accelerator's memory holds at 32 px


def _registered(mode: str) -> str:
    if mode not in REGISTRY:
        raise ValueError(f"mode must be one of {', '.join(REGISTRY)}")
    return mode


RegisteredMode = Annotated[str, AfterValidator(_registered)]  # a mode of generators.REGISTRY


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- artifacts ------------------------------------------------------------------------------------
class GraphEntry(_Record):
    file: str = Field(min_length=1)
    inputs: list[dict]
    outputs: list[dict]


class FileEntry(_Record):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256)


class PreprocessingRecord(_Record):
    image_size: int = Field(ge=8)
    order: Literal["RGB", "BGR", "L"]
    mean: list[float]
    std: list[float]


Dim = Annotated[int, Field(ge=1, le=2**31)]


class StateEntry(_Record):
    name: str
    shape: list[Dim]


class ScoresRecord(_Record):
    """What D's class outputs are: taken before its final normalisation (named), or its output as it is."""

    taken_before: Optional[Literal["Softmax", "LogSoftmax", "Sigmoid"]] = None
    node: Optional[str] = None
    probability: Optional[Literal["softmax", "sigmoid"]] = None
    keep_softmax: bool = False


class ManifestRecord(_Record):
    format_version: int
    backends: list[Literal["step-graph", "training-api"]] = Field(min_length=1)
    mode: RegisteredMode
    batch: int = Field(ge=1, le=MAX_BATCH)
    spec: dict
    hyper: list[str]
    plan: dict[str, Any]
    preprocessing: PreprocessingRecord
    num_classes: int = Field(ge=1, le=2**24)
    labels: Optional[list[str]] = None
    taps: list[str]
    layout: dict[str, list[Dim]]
    state: list[StateEntry]
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    sources: dict
    scores: Optional[ScoresRecord] = None


# -- results --------------------------------------------------------------------------------------
class Progress(_Record):
    done: int = Field(ge=0)
    total: int = Field(ge=0)
    state: Literal["running", "interrupted", "finished"]


class RunRecord(_Record):
    spec: dict
    results_key: str
    provenance: dict
    display: Literal["model", "contrast", "original"]
    progress: Progress


class TopEntry(_Record):
    class_: int = Field(alias="class", ge=0)
    name: str
    score: Optional[float]  # null where D's output was not finite
    probability: Optional[float] = None  # D's probability of the class, where the scores precede its softmax


class TargetRecord(_Record):
    target: str
    id: str = Field(min_length=1, pattern=r"^[\w.\-]+$")
    name: str
    results_key: str
    png_sha256: str = Field(pattern=SHA256)
    mode: RegisteredMode
    seed: int
    steps: int
    loss_curve: list[list[Optional[float]]]  # [step, loss, activation]; null where not finite
    seconds: float = Field(ge=0)
    diverged: Optional[str] = None
    final_activation: Optional[float] = None
    final_probability: Optional[float] = None
    top5: list[TopEntry] = []
    top1_is_target: bool = False


def _where(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    return f"field {loc!r}: " if loc else ""


def validated(data, model: type[_Record], path: str, what: str):
    """`data` (parsed JSON) checked against `model`, or one line naming the file and field."""
    if not isinstance(data, dict):
        kind = {list: "a list", type(None): "null", str: "a string", bool: "a boolean"}.get(type(data), "a number")
        raise UsageError(f"{what} {path!r} holds {kind}, not a JSON object; {_REMEDY.get(model, 'remove it')}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise UsageError(
            f"{what} {path!r}: {_where(first)}{first['msg'].lower()}; {_REMEDY.get(model, 'remove it')}"
        ) from None


JSON_LIMIT = 64 * 2**20  # bytes of any JSON file read back (a manifest with 1,000 labels is ~100 KB)
TEXT_LIMIT = 64 * 2**20  # bytes of a labels or targets file
PNG_LIMIT = 256 * 2**20  # bytes of a result's PNG read back (a 4096 px RGB PNG is under 50 MiB)
JSON_DEPTH = 64  # nesting of any JSON read back (the records nest 5 deep)


def parse_json(data: bytes, path: str, what: str, remedy: str = "remove it"):
    """Parsed JSON, or one line (not UTF-8, not JSON, nested deeper than any record, NaN)."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        value = None
        deep = True
    except (UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"{what} {path!r} is not valid JSON ({str(e).splitlines()[0][:120]}); {remedy}") from None
    else:
        deep = _depth(value) > JSON_DEPTH
    if deep:
        raise UsageError(f"{what} {path!r} nests deeper than {JSON_DEPTH} levels; it is not a record; {remedy}")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= JSON_DEPTH:
                stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_record_in(folder: Folder, name: str, model: type[_Record], what: str):
    """A record in a folder the project owns: reached without following a link (see files.Folder)."""
    path = folder.where(name)
    return validated(parse_json(folder.read(name, JSON_LIMIT, what), path, what, _REMEDY[model]), model, path, what)


def read_result(folder: Folder, name: str) -> tuple["TargetRecord", bytes]:
    """The result `name` of a targets folder: its record (`name`.json) and the PNG whose digest the
    record reports, or one line (damaged, another target's, or a PNG that is not the one reported)."""
    record = read_record_in(folder, name + ".json", TargetRecord, "result")
    if record.id != name:
        raise UsageError(f"{folder.where(name + '.json')!r} is the record of {record.id!r}; delete it to recompute it")
    png = folder.read(name + ".png", PNG_LIMIT, "result image")
    if hashlib.sha256(png).hexdigest() != record.png_sha256:
        raise UsageError(
            f"{folder.where(name + '.png')!r} is not the image its record reports; run the same command again "
            "to recompute it"
        )
    return record, png


_REMEDY = {
    ManifestRecord: "export the artifacts again",
    RunRecord: f"run with {setting('force', True)} to start the results over, or use another {setting('out')}",
    TargetRecord: "delete it (and its PNG) to recompute that target",
}


# -- text a user gives ----------------------------------------------------------------------------
def read_lines(path: str, what: str) -> list[str]:
    """Non-empty lines that are not comments; UTF-8 with or without a byte-order mark."""
    try:
        text = read_plain_file(path, TEXT_LIMIT, what).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {path!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
