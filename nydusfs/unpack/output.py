"""Where the tar goes: a file written all or nothing, or standard output as it is made."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO

from ..errors import NydusfsError
from ..util.output import atomic_output

BUFFER = 1 << 20


class Sink:
    """A binary stream whose write errors name the output (ENOSPC, EIO: one line, exit 2)."""

    def __init__(self, f: IO[bytes], name: str) -> None:
        self.f = f
        self.name = name

    def write(self, raw: bytes) -> int:
        try:
            return self.f.write(raw)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise NydusfsError(f"{self.name}: cannot write: {e.strerror or e}") from None


@contextlib.contextmanager
def output(path: str) -> Iterator[Sink]:
    """A stream for `path` ('-' is standard output). A file appears under its name only when
    the body finished (util/output.py: a temp file beside it, synced and renamed; on any error,
    interrupt or SIGTERM it is removed and an existing file is left as it was)."""
    if path == "-":
        sink = Sink(sys.stdout.buffer, "standard output")
        yield sink
        sys.stdout.buffer.flush()
        return
    with atomic_output(path, buffering=BUFFER) as f:
        yield Sink(f, path)
