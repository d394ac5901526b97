"""dgn-engine gallery: the browsable page of a results folder."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .common import ensure_writable_dir, folder

HELP = "build index.html, contact sheets and summary.json for a results folder (or merge several)"
DESCRIPTION = """\
Writes RESULTS_DIR/index.html (a grid of thumbnails with the class name, the final activation and
whether the classifier's top-1 on the image is the target; click one for the full image and its
loss curve), contact sheets sheet-001.png ... of up to 100 targets each, and summary.json (targets
that reached top-1, median activation, compute time). `run` does this at the end of every job.

Several folders (the shards of one job, run with --shard I/N) are merged with --into DIR: their
finished results are copied into DIR (checked: same settings, weights and artifacts, each image the
one its record reports) and DIR gets the gallery of them all."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gallery", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="a folder written by dgn-engine run")
    p.add_argument(
        "--into", type=folder, metavar="DIR", help="merge the RESULTS_DIRs into this folder and build its gallery"
    )
    p.set_defaults(func=main)


def main(args) -> int:
    from ..engine.gallery import build_gallery, merge_results, summary_line
    from ..engine.lock import FolderLock
    from ..engine.results_folder import TARGETS, open_results

    for path in args.results:
        with open_results(path, create=False) as results:
            if results.kind(TARGETS) != "folder":
                raise UsageError(f"{path!r} holds no results (no targets/ folder); give the --out of a run")
    if len(args.results) > 1 and not args.into:
        raise UsageError("several results folders: name the folder that merges them with --into DIR")
    if args.into:
        ensure_writable_dir(args.into, "--into folder")
    with open_results(args.into or args.results[0], create=bool(args.into)) as out, FolderLock(out):
        if args.into:
            print(f"merged {merge_results(args.results, out)} results into {out.path!r}")
        summary = build_gallery(out)
    print(summary_line(summary))
    print(f"open {os.path.join(os.path.abspath(out.path), 'index.html')}")
    return 0
