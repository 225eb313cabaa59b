"""Terminal helpers of the table-printing verbs: the rich console, and `shown`, which is the
project's one escaping function (nydusfs/util/show.py: control characters, bidi overrides and
bytes that are not UTF-8 become escapes, so a crafted name cannot move the cursor or rewrite
the screen). Put the result into rich as Text, never as markup."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..util.show import printable as shown

__all__ = ["console", "shown"]


def console(stderr: bool = False) -> Any:
    """A rich console: the terminal's width on a terminal; wide rows for files and pipes
    (unless COLUMNS says otherwise), so tables are not squeezed into 80 columns."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None, highlight=False)
