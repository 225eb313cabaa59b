"""Where the tar goes: a file written all or nothing, or standard output as it is made."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import NydusfsError

BUFFER = 1 << 20


class _Terminated(BaseException):
    """SIGTERM while writing: unwinds like an interrupt so that the temp file is removed."""


class Sink:
    """A binary stream whose write errors name the output (ENOSPC, EIO: one line, exit 2)."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name

    def write(self, raw: bytes) -> int:
        try:
            return self.f.write(raw)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise NydusfsError(f"{self.name}: cannot write: {e.strerror or e}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def output(path: str) -> Iterator[Sink]:
    """A stream for `path` ('-' is standard output). A file appears under its name only when
    the body finished: it is written to a temp file beside it, synced and renamed; on any error,
    interrupt or SIGTERM the temp file is removed and an existing file is left as it was."""
    if path == "-":
        sink = Sink(sys.stdout.buffer, "standard output")
        yield sink
        sys.stdout.buffer.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated()

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main else None
    try:
        with open(fd, "wb", buffering=BUFFER) as f:
            yield Sink(f, path)
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as e:
            raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, _Terminated):
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
