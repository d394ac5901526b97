"""dgn-engine: the entry point."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..engine.loop import Interrupted
from ..errors import UsageError
from . import bench, export, gallery, run, train_decoder, verify

DESCRIPTION = """\
Shows what an image classifier has learned by synthesising its preferred inputs: images made by a
deep generator network that drive a chosen class, filter or neuron as high as possible
(Despraz et al., IJCCI 2017)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dgn-engine", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"dgn-engine {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in (run, export, verify, bench, gallery, train_decoder):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UsageError as e:
        print(f"dgn-engine: error: {e}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print("\ndgn-engine: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    except Interrupted:
        print("\ndgn-engine: stopped by Ctrl-C; finished targets are kept; run the same command again "
              "to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
