"""The trio side of a mount: the pyfuse3 main loop, signals, the readiness check, prefetch.

`serve()` runs until the filesystem is unmounted or a signal (INT, TERM, HUP) asks it to
stop; the caller then unmounts (pyfuse3.close) so a stop never leaves a stale mount.
Readiness is checked end to end: a worker thread stats the mountpoint, which only returns
once the kernel's INIT and the root's GETATTR went through this very loop.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from typing import Callable

import pyfuse3
import trio

from .ops import Operations
from .prefetch import Prefetcher

log = logging.getLogger("nydusfs.fuse")

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READY_TIMEOUT = 30.0
READAHEAD_KB = 1024     # = the largest FUSE request libfuse3 negotiates (256 pages)

ReadyCallback = Callable[[str | None], None]


class EarlySignals:
    """Remember stop signals that arrive before the trio loop listens (between mounting and
    serving), so that they still end in a clean unmount rather than a dead mount."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        for s in SIGNALS:
            signal.signal(s, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.received.append(signum)


async def serve(ops: Operations, mountpoint: str, ready: ReadyCallback, early: EarlySignals,
                *, prefetch_budget: int | None = None) -> None:
    ops.limiter = trio.CapacityLimiter(ops.threads)
    started = time.perf_counter()
    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals)
            if early.received:
                _stop(early.received[0])
            nursery.start_soon(_check_ready, ops, mountpoint, ready, started, prefetch_budget,
                               nursery)
            # each request task holds a 1 MiB receive buffer; more tasks than the worker threads
            # can keep busy (plus some for metadata) would only cost memory
            await pyfuse3.main(min_tasks=2, max_tasks=2 * ops.threads + 4)
            nursery.cancel_scope.cancel()       # the loop ended: stop the helpers too


def _raise_readahead(dev: int) -> None:
    """Let the kernel read ahead up to READAHEAD_KB (its default, 128 KiB, turns a 1 MiB
    chunk into eight requests). Best effort: the sysfs knob of this mount's bdi needs root."""
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READAHEAD_KB))
    except OSError as e:
        log.debug("readahead left as it is (%s: %s)", path, e.strerror)


def _stop(signum: int) -> None:
    log.info("received %s: unmounting", signal.Signals(signum).name)
    pyfuse3.terminate()


async def _watch_signals(signals: object) -> None:
    async for signum in signals:  # type: ignore[attr-defined]
        _stop(signum)
        return


async def _check_ready(ops: Operations, mountpoint: str, ready: ReadyCallback, started: float,
                       budget: int | None, nursery: trio.Nursery) -> None:
    error = None
    with trio.move_on_after(READY_TIMEOUT) as scope:
        try:
            st = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
            if st.st_ino != 1 or not stat.S_ISDIR(st.st_mode):
                error = f"{mountpoint} does not show the mounted image (inode {st.st_ino})"
        except OSError as e:
            error = f"the new mount at {mountpoint} does not answer: {e.strerror}"
    if scope.cancelled_caught:
        error = f"the new mount at {mountpoint} did not answer within {READY_TIMEOUT:.0f} s"
    if error is not None:
        ready(error)
        pyfuse3.terminate()
        return
    log.debug("ready %.1f ms after the loop started", (time.perf_counter() - started) * 1000)
    _raise_readahead(st.st_dev)
    ready(None)
    if ops.image.prefetch and budget is not None:
        log.info("prefetch: warming the files of %d prefetch table entries", len(ops.image.prefetch))
        prefetcher = Prefetcher(ops.image, ops.faults, budget=budget, verify=ops.verify)
        nursery.start_soon(prefetcher.run)
