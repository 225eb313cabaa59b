"""SIGTERM as a clean exit while something must be undone (outputs, mounts).

By default SIGTERM ends the process at once, skipping `finally` blocks: temporary files stay
behind and mounts stay up. Inside `sigterm_exits()` it raises SystemExit(143) in the main
thread instead, so the same cleanup runs as for Ctrl-C. Inside `held()` that exit waits for
the end of the block.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Iterator

_depth = 0
_previous: Any = None
_holding = 0
_pending: int | None = None


def _exit(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _holding:
        _pending = signum
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise SystemExit(128 + signum)


def main_thread_only() -> None:
    """ThreadPoolExecutor initializer: leave SIGTERM and SIGINT to the main thread. The kernel
    interrupts the system call of the thread a signal is delivered to, so a main thread blocked
    reading a stalled pipe only sees the signal if no worker thread can take it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A SIGTERM exit waits until the block is done: for steps that must not be cut in two (a
    temporary file made and recorded for cleanup, a child started and its handle kept). The
    signal itself is not blocked, so children started here do not inherit a blocked mask."""
    global _holding, _pending
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending is not None:
            signum, _pending = _pending, None
            _exit(signum, None)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    global _depth, _previous
    # handlers can only be set from the main thread; a SIGTERM ignored by the parent stays ignored
    if threading.current_thread() is not threading.main_thread() or \
            (_depth == 0 and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN):
        yield
        return
    if _depth == 0:
        _previous = signal.signal(signal.SIGTERM, _exit)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            signal.signal(signal.SIGTERM, _previous)
