"""Text from an image, made safe for a terminal: control characters (C0, DEL, C1) and bytes
that are not UTF-8 (surrogate escapes from os.fsdecode) are shown as \\xNN escapes, so a
crafted name cannot move the cursor or rewrite the screen. Put the result into rich as
Text, never as markup."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\udc80-\udcff]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    code = ord(c)
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def shown(text: str) -> str:
    return _UNSAFE.sub(_escape, text)


def console(stderr: bool = False) -> Any:
    """A rich console: the terminal's width on a terminal; wide rows for files and pipes
    (unless COLUMNS says otherwise), so tables are not squeezed into 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None, highlight=False)
