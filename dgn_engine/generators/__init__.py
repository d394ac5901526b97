"""How the image is made: each mode names one parameterisation that owns its plan, its trainable
tensors and their start, its torch image and its default settings. A new one is a module here plus its
line in REGISTRY; the CLI's --mode, the Python API's mode= and the records read back follow it."""

from __future__ import annotations

from ..errors import UsageError, setting
from .base import Generator
from .maco import Maco
from .pixel import Pixel
from .pretrained import Pretrained
from .untrained import Untrained

REGISTRY: dict[str, Generator] = {g.name: g for g in (Untrained(), Pretrained(), Pixel(), Maco())}


def generator(mode: str) -> Generator:
    """The parameterisation a mode names."""
    try:
        return REGISTRY[mode]
    except KeyError:
        raise UsageError(f"mode must be one of {', '.join(REGISTRY)}, got {mode!r}") from None


def option_owner(option: str) -> Generator:
    """The parameterisation whose source setting `option` is (decoder, g_width, spectrum)."""
    return next(g for g in REGISTRY.values() if g.option == option)


def option_problem(mode: str, option: str) -> str | None:
    """Why `option` does not apply in `mode` (the message's tail names it with errors.setting), or None."""
    gen, owner = generator(mode), option_owner(option)
    if gen is owner:
        return None
    why = (
        f"{mode} mode has no G: leave it out"
        if owner.has_g and not gen.has_g
        else f"use {setting('mode', owner.name)} or leave it out"
    )
    return f"{setting(option)} is {owner.option_is}; {why}"


OPTIONS = tuple(g.option for g in REGISTRY.values() if g.option)

__all__ = ["OPTIONS", "REGISTRY", "Generator", "generator", "option_owner", "option_problem"]
