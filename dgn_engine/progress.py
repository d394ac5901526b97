"""Progress bars: live on a terminal, a line every half minute in a log file (transient bars: none)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(
    total=None, *, desc: str, unit: str, disable: bool = False, leave: bool = True, initial: int = 0, iterable=None
):
    tty = sys.stderr.isatty()
    transient_in_a_log = not leave and not tty  # a bar that erases itself leaves only debris in a log file
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=disable or transient_in_a_log,
        leave=leave,
        initial=initial,
        dynamic_ncols=tty,
        mininterval=0.1 if tty else 30.0,
    )
