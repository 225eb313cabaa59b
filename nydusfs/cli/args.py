"""Argument types shared by the verbs: numbers with their range, checked by argparse so that a
bad value is a one-line usage error (exit 2) before any work starts."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from ..errors import UsageError

MAX_DIGITS = 40          # longer numbers are past any range here (and slow to convert)
MAX_THREADS = 1024


def integer(lo: int, hi: int | None = None, *, base0: bool = False) -> Callable[[str], int]:
    """An argparse type: an integer from `lo` to `hi` (decimal, or 0x/0o/0b with base0)."""
    bounds = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"

    def parse(text: str) -> int:
        value: int | None = None
        if len(text.strip()) <= MAX_DIGITS:
            try:
                value = int(text, 0) if base0 else int(text)
            except ValueError:
                pass
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {text[:60]!r}")
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {value}")
        return value

    parse.__name__ = "integer"
    return parse


def seconds(hi: float) -> Callable[[str], float]:
    """An argparse type: a finite, positive number of seconds up to `hi`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= hi):
            raise argparse.ArgumentTypeError(f"expected seconds, more than 0 and at most {hi:g}, "
                                             f"found {text[:60]!r}")
        return value

    parse.__name__ = "seconds"
    return parse


def output_path(flag: str, path: str | None) -> None:
    """Refuse, before any work, a file written in place (a log) that the command could not
    write: a directory, or a file in a directory that does not exist."""
    if path is None or path == "-":
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory (give a file name)")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
