"""Warm the files of the image's prefetch table in the background once the mount is ready;
with `--prefetch-all` (registry images), then fetch every blob into the on-disk chunk cache.

Chunks are decompressed into the chunk cache up to `budget` bytes (beyond that they would only
evict each other); the rest are read raw so the blob file sits in the page cache. One worker
thread, a few chunks per call: user reads keep their own threads, and shutdown never waits
for more than one small batch.

Both run as prefetch for the registry backend (nydusfs.registry.traffic): their requests wait
while on-demand reads are in flight and keep to --bandwidth-limit.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import Any, Iterator

import trio

from ..errors import BlobError, FormatError, NydusfsError
from ..reader.chunkmap import chunk_identity
from .guard import FaultLog

log = logging.getLogger("nydusfs.fuse")

BATCH = 8


def names_files(image: Any) -> bool:
    """Whether the prefetch table names particular files: a table of the root alone (what
    convert writes when given no patterns) says "everything" and is no hint of what to fetch
    first; over a registry, everything is fetched only with --prefetch-all."""
    return bool(image.prefetch) and image.prefetch != [image.root_ino]


def prefetch_files(image: Any) -> list[int]:
    """Regular files named by the prefetch table, directories expanded, in table order."""
    seen: set[int] = set()
    out: list[int] = []
    for top in image.prefetch:
        for ino in _under(image, top):
            if ino not in seen:
                seen.add(ino)
                out.append(ino)
    return out


def _under(image: Any, top: int) -> Iterator[int]:
    stack = [top]
    visited: set[int] = set()
    while stack:
        ino = stack.pop()
        node = image.inode(ino)
        if node.is_reg:
            yield ino
        elif node.is_dir and ino not in visited:
            visited.add(ino)
            stack.extend(child for _, child in reversed(image.readdir(ino)))


def _chunks(image: Any, faults: FaultLog) -> list[Any]:
    out, keys = [], set()
    try:
        files = prefetch_files(image)
    except FormatError as e:
        faults.report(("format", str(e)), f"prefetch: {e}")
        return []
    for ino in files:
        try:
            chunks = image.chunks(ino)
        except FormatError as e:
            faults.report(("format", str(e)), f"prefetch: inode {ino}: {e}")
            continue
        for c in chunks:
            key = chunk_identity(c)   # as the chunk cache: records of one range may differ
            if key not in keys:
                keys.add(key)
                out.append(c)
    return out


class Prefetcher:
    def __init__(self, image: Any, faults: FaultLog, *, budget: int, verify: bool) -> None:
        self.image = image
        self.faults = faults
        self.budget = budget
        self.verify = verify
        self.warmed = 0       # bytes decompressed into the cache
        self.chunks = 0       # chunks fetched (decompressed or read raw)
        self.failed = 0
        self.dead: set[int] = set()   # blobs that cannot be opened: skip their other chunks

    def _batch(self, batch: list[Any]) -> None:
        with _as_prefetch():
            self._fetch(batch)

    def _fetch(self, batch: list[Any]) -> None:
        store = self.image.blob_store
        for c in batch:
            if c.blob_index in self.dead:
                self.failed += 1
                continue
            try:
                if self.warmed + c.uncompressed_size <= self.budget:
                    store.chunk_data(c, self.verify)
                    self.warmed += c.uncompressed_size
                else:
                    store.read_raw(c.blob_index, c.compressed_offset, c.compressed_size, c.index)
                self.chunks += 1
            except BlobError as e:
                self.failed += 1
                self.faults.blob(e, "prefetch")
                if e.chunk is None:
                    self.dead.add(c.blob_index)
            except NydusfsError as e:     # the registry failed past its retries (logged there)
                self.failed += 1
                log.debug("prefetch: blob %s: %s", store.blob_id(c.blob_index), e)

    async def run(self) -> None:
        chunks = await trio.to_thread.run_sync(_chunks, self.image, self.faults)
        for i in range(0, len(chunks), BATCH):
            await trio.to_thread.run_sync(self._batch, chunks[i:i + BATCH])
        log.info("prefetch done: %d of %d chunks fetched, %d bytes decompressed into the cache, "
                 "%d failed", self.chunks, len(chunks), self.warmed, self.failed)


def _as_prefetch() -> Any:
    """Mark this thread's registry requests as prefetch (a no-op for local blobs)."""
    try:
        from ..registry.traffic import background
    except ImportError:
        return contextlib.nullcontext()
    return background()


# bytes per request of --prefetch-all: few large requests cost less per byte; with a
# bandwidth limit at most one second's worth, so that an on-demand read needing a page a
# throttled prefetch request has claimed waits no longer than that
PREFETCH_REQUEST = 16 << 20
PREFETCH_REQUEST_MIN = 256 << 10
PREFETCH_TRIES = 3             # a range that keeps failing is left to on-demand reads


class BlobPrefetcher:
    """--prefetch-all: every byte of every blob into the on-disk chunk cache, from `threads`
    threads; the compressed ranges of the prefetch table's chunks first, then each blob in
    order. Ranges already in the cache cost no request. `stop()` waits a little for the
    current requests; a request still retrying then is abandoned with the process (the cache
    is crash-safe, so that is no worse than a kill)."""

    def __init__(self, image: Any, faults: FaultLog, threads: int,
                 bandwidth_limit: int | None = None) -> None:
        self.image = image
        self.request = PREFETCH_REQUEST if bandwidth_limit is None else \
            max(PREFETCH_REQUEST_MIN, min(PREFETCH_REQUEST, bandwidth_limit))
        self.faults = faults
        self.nthreads = threads
        self.queue: collections.deque[tuple[int, int, int, int]] = collections.deque()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.fetched = self.failed = 0
        self.left = 0

    def start(self) -> None:
        planner = threading.Thread(target=self._plan_and_run, name="nydusfs-prefetch-all",
                                   daemon=True)
        self.threads.append(planner)
        planner.start()

    def _plan_and_run(self) -> None:
        store = self.image.blob_store
        for c in _chunks(self.image, self.faults) if names_files(self.image) else []:
            self.queue.append((c.blob_index, c.compressed_offset, c.compressed_size, 0))
        for index, blob in enumerate(self.image.blobs):
            try:
                size = store.file_size(index)
            except NydusfsError as e:
                self.faults.report(("prefetch-all", index), f"prefetch-all: blob {blob.blob_id}: {e}")
                continue
            for off in range(0, size, self.request):
                self.queue.append((index, off, min(self.request, size - off), 0))
        self.left = self.nthreads
        workers = [threading.Thread(target=self._work, name=f"nydusfs-prefetch-{i}", daemon=True)
                   for i in range(self.nthreads)]
        with self.lock:
            if self.stopping.is_set():
                return
            self.threads.extend(workers)
            for t in workers:
                t.start()

    def _work(self) -> None:
        with _as_prefetch():
            while not self.stopping.is_set():
                with self.lock:
                    if not self.queue:
                        break
                    index, off, size, tries = self.queue.popleft()
                try:
                    assert self.image.blob_ranges is not None   # only images by reference
                    reader = self.image.blob_ranges(self.image.blobs[index].blob_id)
                    n = reader.fill(off, size, self.request)
                    with self.lock:
                        self.fetched += n
                except (NydusfsError, OSError) as e:
                    log.debug("prefetch-all: blob %d bytes %d+%d: %s", index, off, size, e)
                    if tries + 1 < PREFETCH_TRIES:
                        with self.lock:
                            self.queue.append((index, off, size, tries + 1))
                        self.stopping.wait(1.0)     # let a failing registry breathe
                    else:
                        with self.lock:
                            self.failed += 1
        with self.lock:
            self.left -= 1
            last = self.left == 0 and not self.stopping.is_set()
        if last:
            log.info("prefetch-all done: %d bytes fetched, %d ranges failed (left to on-demand "
                     "reads)", self.fetched, self.failed)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop; whether every thread ended within `timeout` seconds (if not, the blob readers
        must stay open: a thread may still write to their files)."""
        with self.lock:
            self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)
