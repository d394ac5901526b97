"""A results folder: opened once, entered without following links, and taken only when it is one.

`run` and `gallery --into` write into a folder only if it is empty, new, or holds a run record that
dgn-engine wrote; a folder of other files is refused, so nothing of a user's is overwritten or removed.
"""

from __future__ import annotations

import re

from ..errors import UsageError
from ..files import Folder
from ..records import RunRecord, read_record_in

TARGETS = "targets"
# every name dgn-engine writes at the top of a results folder (temporary files and locks included)
OWN_NAME = re.compile(
    r"(\.lock(-shard-\d+-of-\d+)?|targets|run(-shard-\d+-of-\d+)?\.json|index\.html|summary\.json|sheet-\d+\.png|\.tmp-[\w-]+)"
)


def run_records(folder: Folder) -> list[str]:
    """The names of the run records in the folder (run.json and each shard's run-shard-I-of-N.json)."""
    return [n for n in folder.names() if re.fullmatch(r"run(-shard-\d+-of-\d+)?\.json", n)]


def open_results(path: str, create: bool, what: str = "results folder") -> Folder:
    """The folder, if it is (or may become) a results folder; else one line naming what is in the way."""
    folder = Folder.open(path, create=create, what=what)
    try:
        foreign = [n for n in folder.names() if not OWN_NAME.fullmatch(n)]
        if foreign and not _holds_run_record(folder):
            raise UsageError(
                f"{path!r} is not a results folder: it holds {foreign[0]!r}, which dgn-engine did not write; "
                "choose a new or empty folder"
            )
        if folder.kind(TARGETS) not in (None, "folder"):
            raise UsageError(f"{folder.where(TARGETS)!r} is not a folder; remove it, or choose another folder")
    except BaseException:
        folder.close()
        raise
    return folder


def _holds_run_record(folder: Folder) -> bool:
    for name in run_records(folder):
        try:
            read_record_in(folder, name, RunRecord, "run record")
            return True
        except UsageError:
            continue
    return False
