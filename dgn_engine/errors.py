"""The one error type a user sees: a single line, exit code 2.

Below the CLI a message names a setting by its Python name with `setting("image_size")` (or with its
value, `setting("device", "cuda")`). From the Python API that reads image_size and device='cuda'; while
the CLI runs (`flags_of_the_cli`) every message, warnings included, reads --image-size and
--device cuda instead, so that no lower layer speaks in flags.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

_SETTING = re.compile(r"\x00([A-Za-z_][A-Za-z0-9_]*)(?:=([^\x00]*))?\x00")


def setting(name: str, value=None) -> str:
    """A setting (and its value) inside a message, rendered by whoever shows the message."""
    return f"\x00{name}\x00" if value is None else f"\x00{name}={value}\x00"


_CLI_FLAGS: dict[str, str] | None = None  # set while the CLI runs: setting name -> option string


@contextmanager
def flags_of_the_cli(flags: dict[str, str]):
    """Within: messages name settings as the CLI's flags."""
    global _CLI_FLAGS
    before, _CLI_FLAGS = _CLI_FLAGS, flags
    try:
        yield
    finally:
        _CLI_FLAGS = before


def _python(m: re.Match) -> str:
    name, value = m.group(1), m.group(2)
    if value is None:
        return name
    return f"{name}={value}" if re.fullmatch(r"-?\d+(\.\d+)?|True|False|None", value) else f"{name}={value!r}"


def rendered(message: str) -> str:
    """A message (a warning's too) with its settings named as whoever runs shows them."""
    return str(UsageError(message))


class UsageError(Exception):
    """Bad input from the user: the message names the problem and what to do."""

    exit_code = 2

    def __str__(self) -> str:
        if _CLI_FLAGS is not None:
            return self.for_cli(_CLI_FLAGS)
        return _SETTING.sub(_python, super().__str__())

    @property
    def raw(self) -> str:
        """The message with its settings unrendered (to embed it in another UsageError)."""
        return super().__str__()

    def for_cli(self, flags: dict[str, str]) -> str:
        """The message with each setting as its flag (`flags`: setting name -> option string)."""

        def flag(m: re.Match) -> str:
            name, value = m.group(1), m.group(2)
            option = flags.get(name, "--" + name.replace("_", "-"))
            return option if value in (None, "True") else f"{option} {value}"  # a switch: --force

        return _SETTING.sub(flag, super().__str__())
