"""Who gets the registry first: on-demand reads before background prefetch, and prefetch held
to `--bandwidth-limit`.

A thread marks itself as prefetching with `background()`. Each blob request a prefetching
thread makes first waits until no on-demand request is in flight, then takes its size from a
token bucket (bytes per second, a burst of one second). On-demand requests neither wait nor
take tokens.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class ThreadFlag:
    """A mark a thread carries for the length of a with-block (a nested block restores it)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def raised(self) -> Iterator[None]:
        before = self.is_set()
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = before

    def is_set(self) -> bool:
        return bool(getattr(self._local, "on", False))


_background = ThreadFlag()


def background() -> contextlib.AbstractContextManager[None]:
    """Requests made by this thread inside the block are prefetch (throttled, yielding)."""
    return _background.raised()


def is_background() -> bool:
    return _background.is_set()


class TokenBucket:
    """`rate` bytes per second; a request larger than what is left runs into debt that the
    next requests wait out, so any request size works with any rate."""

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.tokens = self.rate        # one second of burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> float:
        """Take n bytes' worth; sleep until the bucket is out of debt. Returns the wait."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


class Traffic:
    """Shared by every blob reader of one image source."""

    def __init__(self, bandwidth_limit: int | None = None) -> None:
        self.bucket = TokenBucket(bandwidth_limit) if bandwidth_limit else None
        self.on_demand = 0
        self.cond = threading.Condition()
        self.background_waits = 0.0    # seconds prefetch spent yielding or throttled

    @contextlib.contextmanager
    def request(self, size: int) -> Iterator[None]:
        if is_background():
            start = time.monotonic()
            with self.cond:
                while self.on_demand:
                    self.cond.wait(0.5)
            if self.bucket is not None:
                self.bucket.take(size)
            self.background_waits += time.monotonic() - start
            yield
            return
        with self.cond:
            self.on_demand += 1
        try:
            yield
        finally:
            with self.cond:
                self.on_demand -= 1
                if not self.on_demand:
                    self.cond.notify_all()
