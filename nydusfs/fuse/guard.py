"""Every request gets an answer: exceptions become errnos, faults are logged once.

A request handler may only raise `pyfuse3.FUSEError`; anything else would end the main loop
(and leave a dead mount). `guarded` turns reader errors into their errno, a blob fault into
EIO (logged once per blob and chunk, since the kernel retries reads), and any other exception
into EIO plus one log line.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3

from ..errors import BlobError, FormatError, NydusfsError

log = logging.getLogger("nydusfs.fuse")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class FaultLog:
    """Log a fault the first time it is seen; count every occurrence.

    Thread-safe: the prefetcher reports from worker threads.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[object, ...], int] = {}
        self._lock = threading.Lock()

    def report(self, key: tuple[object, ...], message: str) -> None:
        with self._lock:
            count = self._seen.get(key, 0)
            self._seen[key] = count + 1
        if count == 0:
            log.error("%s", message)

    def blob(self, e: BlobError, where: str) -> None:
        # a whole-blob fault (missing file) has no chunk: one line per blob
        self.report(("blob", e.blob_id, e.chunk), f"{where}: {e}")

    def count(self) -> int:
        with self._lock:
            return sum(self._seen.values())


def errno_of(e: BaseException) -> int:
    if isinstance(e, NydusfsError):
        return e.errno
    if isinstance(e, OSError) and e.errno:
        return e.errno
    return errno.EIO


def guarded(method: F) -> F:
    """Wrap a request handler of `Operations` (which has `faults` and `debug`)."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any) -> Any:
        if self.debug:
            log.debug("%s%r", name, args[:3])
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except BlobError as e:
            self.faults.blob(e, f"{name}: inode {args[0] if args else '?'}")
            raise pyfuse3.FUSEError(errno.EIO) from None
        except FormatError as e:
            # a damaged bootstrap: this entry fails, the rest of the tree keeps working
            self.faults.report(("format", str(e)), f"{name}{args[:2]!r}: {e}")
            raise pyfuse3.FUSEError(errno.EIO) from None
        except (NydusfsError, OSError) as e:
            raise pyfuse3.FUSEError(errno_of(e)) from None
        except Exception as e:  # a bug: answer EIO, keep serving
            log.error("%s%r: unexpected %s: %s", name, args[:3], type(e).__name__, e,
                      exc_info=self.debug)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]
