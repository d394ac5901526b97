"""Every file dgn-engine reads back, checked in one place: the artifacts' manifest, a results folder's
run.json and target JSON files, written PNGs, and the text files a user names (labels, targets).

A file that is unreadable, not what it should be, or edited into nonsense gives one line naming the
file and the field (a UsageError), never a traceback. The schemas are pydantic models: types, ranges
and required fields are declared once, and pydantic's error says which field is wrong and why.
Unknown extra fields are allowed (newer files stay readable where nothing they need changed).
"""

from __future__ import annotations

import json
import os
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UsageError

SHA256 = r"^[0-9a-f]{64}$"


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


class StateEntry(_Record):
    name: str
    shape: list[int]


class ManifestRecord(_Record):
    format_version: int
    backends: list[Literal["step-graph", "training-api"]] = Field(min_length=1)
    mode: Literal["untrained", "pretrained", "pixel", "maco"]
    batch: int = Field(ge=1)
    spec: dict
    hyper: list[str]
    plan: dict
    preprocessing: PreprocessingRecord
    num_classes: int = Field(ge=1)
    labels: Optional[list[str]] = None
    taps: list[str]
    layout: dict[str, list[int]]
    state: list[StateEntry]
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    sources: dict


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
    score: float


class TargetRecord(_Record):
    target: str
    id: str = Field(min_length=1, pattern=r"^[\w.\-]+$")
    name: str
    results_key: str
    png_sha256: str = Field(pattern=SHA256)
    mode: Literal["untrained", "pretrained", "pixel", "maco"]
    seed: int
    steps: int
    loss_curve: list[list[float]]  # [step, loss, activation]
    seconds: float = Field(ge=0)
    diverged: Optional[str] = None
    final_activation: Optional[float] = None
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


def read_json_file(path: str, what: str, remedy: str = "remove it"):
    """Parsed JSON, or one line (unreadable, a folder, not UTF-8, not JSON)."""
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a folder, not a file; {remedy}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror}; {remedy}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"{what} {path!r} is not valid JSON ({str(e).splitlines()[0][:120]}); {remedy}") from None


def read_record(path: str, model: type[_Record], what: str):
    return validated(read_json_file(path, what, _REMEDY[model]), model, path, what)


_REMEDY = {
    ManifestRecord: "export the artifacts again",
    RunRecord: "run with --force to start the results over, or use another --out",
    TargetRecord: "delete it (and its PNG) to recompute that target",
}


# -- text a user gives ----------------------------------------------------------------------------
def read_lines(path: str, what: str) -> list[str]:
    """Non-empty lines that are not comments; UTF-8 with or without a byte-order mark."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except IsADirectoryError:
        raise UsageError(f"{what} {path!r} is a folder; give a text file") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {path!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
