"""Text from an image made safe for a terminal: the one escaping function of nydusfs.

Names, symlink targets, xattrs and anything else read from a tar or a bootstrap may hold
control sequences (ESC, C1 controls such as CSI 0x9b, bidi overrides, line separators) that
would act on the user's terminal, and bytes that are not UTF-8. `printable` shows each such
character as an escape (`\\x1b`, `\\u009b`, `\\u202e`, and `\\xNN` for a byte that is not
UTF-8) and leaves every other character as it is. It is idempotent (its output holds none of
the characters it escapes), so a message built from escaped parts may be escaped again as a
whole. JSON output does not use it: JSON keeps exact values.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata

# C0, DEL, C1, and the Unicode format / separator / surrogate characters that reorder or
# break lines (categories Cf, Zl, Zp, Cs); tab stays a control here too, so a row stays a row
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                     "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:          # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(value: object) -> str:
    """`value` (bytes as the image stores them, or text) with everything a terminal would act
    on shown as an escape."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = os.fsdecode(bytes(value))
    else:
        text = str(value)
    text = _UNSAFE.sub(_escape, text)
    if text.isascii():
        return text
    # other format characters (Cf) that the table above does not list
    return "".join(_code(c) if unicodedata.category(c) == "Cf" else c for c in text)


def _code(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def quoted(value: object) -> str:
    """`printable` in single quotes, for naming a member or path inside a message."""
    return "'" + printable(value) + "'"


class EscapingFormatter(logging.Formatter):
    """A log formatter whose messages go through `printable` (the mount logs names and errors
    that come from the image, to a terminal or to a file someone will `cat`)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)
