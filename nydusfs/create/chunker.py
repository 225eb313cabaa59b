"""Cut file data into chunks, digest and compress them on worker threads, dedup, write in order.

Pipeline: the tar reader hands each chunk to a thread pool (digest, then compression unless the
digest is already known); results are taken back strictly in submission order, so blob offsets
and chunk indexes are deterministic. zstandard, lz4 and blake3 release the GIL, so with two
workers both cores work while the main thread reads and decompresses the tar. At most `window`
chunks are in flight, which bounds memory to about 2 x window x chunk size.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Any, Callable

from ..errors import UsageError
from ..format.blob import MAX_CHUNKS_PER_BLOB, compress, digest
from ..format.flags import ChunkFlags
from ..format.record import align
from ..format.v5 import ChunkInfo
from ..util.signals import main_thread_only
from ..write.blobfile import BlobFile

OWN_BLOB = -1          # blob_index placeholder for chunks of the blob being built
ALIGNMENT = 4096


class DictChunks:
    """Chunks of a chunk dictionary: digest -> (dict blob number, ChunkInfo)."""

    def __init__(self) -> None:
        self.by_digest: dict[bytes, tuple[int, ChunkInfo]] = {}
        self.blobs: list[Any] = []      # BlobDesc of each dict blob

    def __len__(self) -> int:
        return len(self.by_digest)


class Chunker:
    def __init__(self, blob: BlobFile, chunk_size: int, compressor: str, digester: str, *,
                 align_uncompressed: bool, align_stored: bool, blob_offset: int,
                 chunk_dict: DictChunks | None = None, workers: int | None = None,
                 window: int = 16, on_dict_use: Callable[[int], int] | None = None) -> None:
        self.blob = blob
        self.chunk_size = chunk_size
        self.compressor = compressor
        self.digester = digester
        self.align_uncompressed = align_uncompressed
        self.align_stored = align_stored
        self.blob_offset = blob_offset
        self.chunk_dict = chunk_dict
        self.on_dict_use = on_dict_use or (lambda i: i)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 2),
                                                          initializer=main_thread_only)
        self.window = window
        self.pending: collections.deque = collections.deque()
        self.seen: dict[bytes, ChunkInfo] = {}       # digest -> chunk of the own blob
        self.own_chunks: list[ChunkInfo] = []       # in index order
        self.uncompressed_end = 0
        self.stored_bytes = 0
        self.input_bytes = 0
        self.dedup_hits = 0

    # --- feeding ---------------------------------------------------------------------------
    def add_file(self, read: Callable[[int], bytes], size: int) -> list[ChunkInfo]:
        """Read `size` bytes through `read`, chunk them; the returned list fills as chunks finish
        (complete after `finish()`)."""
        chunks: list[ChunkInfo] = []
        offset = 0
        while offset < size:
            want = min(self.chunk_size, size - offset)
            data = read(want)
            if len(data) != want:
                raise EOFError("short member data")  # the tar reader raises the real error first
            self.input_bytes += want
            future = self.pool.submit(self._work, data)
            self.pending.append((chunks, offset, data, future))
            offset += want
            if len(self.pending) >= self.window:
                self._drain(self.window // 2)
        return chunks

    def _work(self, data: bytes) -> tuple[bytes, bytes | None, bool]:
        d = digest(data, self.digester)
        if d in self.seen or (self.chunk_dict is not None and d in self.chunk_dict.by_digest):
            return d, None, False     # will be a dedup hit: skip the compression
        stored, compressed = compress(data, self.compressor)
        return d, stored, compressed

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            chunks, offset, data, future = self.pending.popleft()
            d, stored, compressed = future.result()
            chunks.append(self._place(d, data, stored, compressed, offset))

    def finish(self) -> None:
        self._drain(0)
        self.pool.shutdown(wait=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- placing ---------------------------------------------------------------------------
    def _place(self, d: bytes, data: bytes, stored: bytes | None, compressed: bool,
               file_offset: int) -> ChunkInfo:
        hit = self.seen.get(d)
        if hit is not None and hit.uncompressed_size == len(data):
            self.dedup_hits += 1
            return hit.replace(file_offset=file_offset)
        if self.chunk_dict is not None:
            found = self.chunk_dict.by_digest.get(d)
            if found is not None and found[1].uncompressed_size == len(data):
                self.dedup_hits += 1
                number, info = found
                return info.replace(blob_index=self.on_dict_use(number), file_offset=file_offset)
        if stored is None:  # the worker guessed a hit that turned out not to be one
            stored, compressed = compress(data, self.compressor)
        index = len(self.own_chunks)
        if index >= MAX_CHUNKS_PER_BLOB:
            raise UsageError(f"more than {MAX_CHUNKS_PER_BLOB} chunks in one blob: use a larger --chunk-size")
        if self.align_stored:
            self.blob.pad_to(ALIGNMENT)
        coff = self.blob.write(stored)
        uoff = self.uncompressed_end
        if self.align_uncompressed:
            uoff = align(uoff, ALIGNMENT)
        if self.align_stored:
            assert coff == uoff or self.compressor != "none"
        self.uncompressed_end = uoff + len(data)
        self.stored_bytes += len(stored)
        info = ChunkInfo(block_id=d, blob_index=OWN_BLOB,
                         flags=int(ChunkFlags.COMPRESSED) if compressed else 0,
                         compressed_size=len(stored), uncompressed_size=len(data),
                         compressed_offset=self.blob_offset + coff, uncompressed_offset=uoff,
                         file_offset=file_offset, index=index, crc32=0)
        self.own_chunks.append(info)
        self.seen[d] = info
        return info

    @property
    def uncompressed_size(self) -> int:
        """End of the uncompressed address space (rounded to 4 KiB when aligned)."""
        if self.align_uncompressed:
            return align(self.uncompressed_end, ALIGNMENT)
        return self.uncompressed_end
