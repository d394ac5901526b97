"""dgn-engine gallery: the browsable page of a results folder."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError

HELP = "build index.html, contact sheets and summary.json for a results folder"
DESCRIPTION = """\
Writes RESULTS_DIR/index.html (a grid of thumbnails with the class name, the final activation and
whether the classifier's top-1 on the image is the target; click one for the full image and its
loss curve), contact sheets sheet-001.png ... of up to 100 targets each, and summary.json (targets
that reached top-1, median activation, compute time). `run` does this at the end of every job."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gallery", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", metavar="RESULTS_DIR", help="a folder written by dgn-engine run")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..engine.gallery import build_gallery, summary_line

    if not os.path.isdir(os.path.join(args.results, "targets")):
        raise UsageError(f"{args.results!r} holds no results (no targets/ folder); give the --out of a run")
    from ..engine.lock import FolderLock

    with FolderLock(args.results):
        summary = build_gallery(args.results)
    print(summary_line(summary))
    print(f"open {os.path.join(os.path.abspath(args.results), 'index.html')}")
    return 0
