"""dgn-engine: the entry point."""

from __future__ import annotations

import argparse
import signal
import sys

from .. import session
from .._version import __version__
from ..engine.loop import Interrupted
from ..errors import UsageError, flags_of_the_cli
from . import bench, export, gallery, run, train_decoder, verify
from .common import OneLineParser

# each subcommand: its options, and the API function that runs the Request they make (or its own main)
COMMANDS = {
    "run": (run, session.run),
    "export": (export, session.export),
    "verify": (verify, None),
    "bench": (bench, None),
    "gallery": (gallery, None),
    "train-decoder": (train_decoder, None),
}

DESCRIPTION = """\
Shows what an image classifier has learned by synthesising its preferred inputs: images made by a
deep generator network that drive a chosen class, filter or neuron as high as possible
(Despraz et al., IJCCI 2017)."""


def parser() -> OneLineParser:
    p = OneLineParser(prog="dgn-engine", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"dgn-engine {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command, _ in COMMANDS.values():
        command.add_parser(sub)
    return p


def _joined_values(argv: list[str]) -> list[str]:
    """`--target -1*class:1` as `--target=-1*class:1`: argparse takes a value that starts with '-'
    for an option unless it is a plain negative number."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--target" and i + 1 < len(argv) and argv[i + 1].startswith("-") and ":" in argv[i + 1]:
            out.append(f"--target={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def flags(p: argparse.ArgumentParser) -> dict[str, str]:
    """Each setting's flag, from the parsers themselves (the Python API's `model` is --classifier)."""
    found = {"model": "--classifier"}
    for action in p._actions:
        for sub in getattr(action, "choices", None) or {}:
            parser = action.choices[sub]
            if isinstance(parser, argparse.ArgumentParser):
                for a in parser._actions:
                    if a.option_strings and a.dest not in found:
                        found[a.dest] = max(a.option_strings, key=len)
    return found


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside the optimisation loop (which stops between steps by itself)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _terminate(signum, _frame):
    raise Terminated(signal.Signals(signum).name)


STOPPING = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))
EXIT_CODE = {"SIGTERM": 143, "SIGHUP": 129}  # 128 + the signal's number, as a shell reports it


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # paths of bytes that are not UTF-8 print as escapes, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    p = parser()
    previous = {}
    for sig in STOPPING:
        try:
            previous[sig] = signal.signal(sig, _terminate)
        except ValueError:  # not the main thread
            pass
    try:
        args = p.parse_args(_joined_values(sys.argv[1:] if argv is None else list(argv)))
        if args.command is None:
            p.print_help()
            return 2
        with flags_of_the_cli(flags(p)):  # warnings too name settings as flags
            api = COMMANDS[args.command][1]
            if api is None:
                return args.func(args) or 0
            api(args.request(args))
            return 0
    except UsageError as e:
        print(f"dgn-engine: error: {e.for_cli(flags(p))}", file=sys.stderr)  # also one raised in the parser
        return UsageError.exit_code
    except Terminated as e:
        print(f"\ndgn-engine: stopped by {e.name}; run the same command again to resume", file=sys.stderr)
        return EXIT_CODE[e.name]
    except KeyboardInterrupt:
        print("\ndgn-engine: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    except Interrupted as e:
        by = e.signal if e.signal in EXIT_CODE else "Ctrl-C"
        print(
            f"\ndgn-engine: stopped by {by}; finished targets are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_CODE.get(e.signal, 130)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
