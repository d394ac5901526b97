"""Progress bars: live on a terminal, a line every half minute in a log file."""
from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total=None, *, desc: str, unit: str, disable: bool = False, leave: bool = True, initial: int = 0,
        iterable=None):
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial,
                dynamic_ncols=tty, mininterval=0.1 if tty else 30.0)
