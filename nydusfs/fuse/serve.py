"""The trio side of a mount: the pyfuse3 main loop, signals, the readiness check, prefetch.

`serve()` runs until the filesystem is unmounted or a signal (INT, TERM, HUP) asks it to
stop; the caller then unmounts (pyfuse3.close) so a stop never leaves a stale mount.
Readiness is checked end to end: a worker thread stats the mountpoint, which only returns
once the kernel's INIT and the root's GETATTR went through this very loop. Once ready, the
loop also serves the control socket (control.py) for `nydusfs stats`.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from typing import Any, Callable

import pyfuse3
import trio

from . import control as ctl
from .ops import FIRST_READS_MAX, Operations
from .prefetch import Prefetcher

log = logging.getLogger("nydusfs.fuse")

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
READY_TIMEOUT = 30.0
READAHEAD_KB = 1024     # = the largest FUSE request libfuse3 negotiates (256 pages)
CONTROL_CLIENTS = 4     # control connections served at once; more are closed at once
CONTROL_TIMEOUT = 60.0  # a control connection's whole life (a slow or silent client)

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
    if ops.control is not None:
        nursery.start_soon(_serve_control, ops, ops.control)
    ready(None)
    if ops.image.prefetch and budget is not None:
        log.info("prefetch: warming the files of %d prefetch table entries", len(ops.image.prefetch))
        prefetcher = Prefetcher(ops.image, ops.faults, budget=budget, verify=ops.verify)
        nursery.start_soon(prefetcher.run)


async def _serve_control(ops: Operations, control: ctl.Control) -> None:
    """Answer `nydusfs stats` on the control socket until the loop ends; the socket goes with
    it. A socket that cannot be made costs the mount nothing but stats."""
    try:
        sock, ident = ctl.listen(control.path)
    except OSError as e:
        log.warning("no control socket for `nydusfs stats` (%s: %s)", control.path,
                    e.strerror or e)
        return
    log.debug("control socket at %s", control.path)
    listener = trio.socket.from_stdlib_socket(sock)
    busy = trio.Semaphore(CONTROL_CLIENTS)
    one_at_a_time = trio.Lock()        # the paths cache is filled by one walk at a time
    paths: dict[int, bytes] = {}
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                try:
                    busy.acquire_nowait()
                except trio.WouldBlock:
                    conn.close()
                    continue
                nursery.start_soon(_answer, ops, control, conn, busy, one_at_a_time, paths)
    finally:
        listener.close()
        ctl.remove(control.path, ident)


async def _answer(ops: Operations, control: ctl.Control, conn: Any, busy: trio.Semaphore,
                  lock: trio.Lock, paths: dict[int, bytes]) -> None:
    stream = trio.SocketStream(conn)
    try:
        with trio.move_on_after(CONTROL_TIMEOUT):
            if not ctl.peer_allowed(conn):
                return
            data = b""
            while b"\n" not in data and len(data) <= ctl.REQUEST_MAX:
                part = await stream.receive_some(ctl.REQUEST_MAX + 1)
                if not part:
                    break
                data += part
            try:
                ctl.parse_request(data[:ctl.REQUEST_MAX + 1])
            except ValueError as e:
                await stream.send_all(ctl.encode({"error": str(e)}))
                return
            async with lock:
                snap = ctl.snapshot(ops)      # here: the loop is the only writer of the counters
                answer = await trio.to_thread.run_sync(_stats_answer, snap, ops, control, paths)
            await stream.send_all(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass        # the client went away
    finally:
        busy.release()
        await stream.aclose()


def _stats_answer(snap: ctl.Snapshot, ops: Operations, control: ctl.Control,
                  paths: dict[int, bytes]) -> bytes:
    try:
        doc = ctl.document(snap, ops.image, control, paths, FIRST_READS_MAX)
    except Exception as e:  # noqa: BLE001 (a stats request must not end the mount)
        log.error("stats request failed: %s: %s", type(e).__name__, e)
        doc = {"error": f"internal error ({type(e).__name__}: {e})"}
    return ctl.encode(doc)
