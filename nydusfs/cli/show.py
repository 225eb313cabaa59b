"""Text from an image, made safe for a terminal: control characters (C0, DEL, C1) and bytes
that are not UTF-8 (surrogate escapes from os.fsdecode) are shown as \\xNN escapes, so a
crafted name cannot move the cursor or rewrite the screen. Put the result into rich as
Text, never as markup."""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\udc80-\udcff]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    code = ord(c)
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def shown(text: str) -> str:
    return _UNSAFE.sub(_escape, text)
