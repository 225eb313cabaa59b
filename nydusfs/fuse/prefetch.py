"""Warm the files of the image's prefetch table in the background once the mount is ready.

Chunks are decompressed into the chunk cache up to `budget` bytes (beyond that they would only
evict each other); the rest are read raw so the blob file sits in the page cache. One worker
thread, a few chunks per call: user reads keep their own threads, and shutdown never waits
for more than one small batch.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import trio

from ..errors import BlobError, FormatError
from ..reader.chunkmap import chunk_identity
from .guard import FaultLog

log = logging.getLogger("nydusfs.fuse")

BATCH = 8


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

    async def run(self) -> None:
        chunks = await trio.to_thread.run_sync(_chunks, self.image, self.faults)
        for i in range(0, len(chunks), BATCH):
            await trio.to_thread.run_sync(self._batch, chunks[i:i + BATCH])
        log.info("prefetch done: %d of %d chunks fetched, %d bytes decompressed into the cache, "
                 "%d failed", self.chunks, len(chunks), self.warmed, self.failed)
