"""Blob store: finds blob files, reads chunks with os.pread, decompresses, verifies, caches.

Verification checks every chunk against its own digest: a zeroed digest is compared like any
other, and a chunk whose metadata records none (`NoDigestChunk`) fails.

Thread-safe: file descriptors are opened once and only used with pread (no shared seek
position); the decompressed-chunk cache is an LRU bounded in bytes, guarded by a lock.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Callable, Iterable

from ..errors import BlobError, FormatError, NydusfsError
from ..format.blob import (BLOB_META_HEADER_SIZE, BLOB_META_MAGIC, COMPRESSOR_NAMES, MAX_CHUNK_SIZE,
                           MAX_CHUNKS_PER_BLOB, BlobMetaHeader, decode_ci_v1, decode_ci_v2,
                           decompress, digest)
from ..format.flags import BlobFeatures, ChunkFlags
from ..format.v5 import ChunkInfo
from ..util.limits import NotRegularFileError, open_regular
from .chunkmap import NoDigestChunk, chunk_identity
from .model import BlobInfo

DEFAULT_CACHE_BYTES = 64 << 20
# plain ints for the per-chunk tests: IntFlag's `&` costs a Python call each time
_ENCRYPTED_CHUNK = int(ChunkFlags.ENCRYPTED)
_COMPRESSED_CHUNK = int(ChunkFlags.COMPRESSED)
_ENCRYPTED_BLOB = int(BlobFeatures.ENCRYPTED)
_UNSUPPORTED_BLOB = int(BlobFeatures.ZRAN | BlobFeatures.BATCH)


def candidate_names(blob_id: str) -> list[str]:
    return [blob_id, f"sha256:{blob_id}", f"{blob_id}.blob", f"sha256-{blob_id}"]


class BlobCounters:
    """What one blob served, for `nydusfs stats`: reads of the blob file (or range reader) and
    their bytes, chunks found in the chunk cache / loaded from the blob, loads that failed."""

    __slots__ = ("reads", "bytes", "chunk_hits", "chunk_misses", "errors")

    def __init__(self) -> None:
        self.reads = self.bytes = self.chunk_hits = self.chunk_misses = self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _plain_name(blob_id: str) -> bool:
    """A blob id from a bootstrap names a file *in* a blob directory, never a path: an id
    like "../../etc/shadow" must not open a file elsewhere."""
    return bool(blob_id) and "/" not in blob_id and "\0" not in blob_id and blob_id not in (".", "..")


class BlobStore:
    def __init__(self, blobs: list[BlobInfo], dirs: Iterable[str | os.PathLike[str]] = (),
                 files: dict[int, str] | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 ranges: Callable[[str], Any] | None = None) -> None:
        self.blobs = blobs
        # blob id -> RangeReader (nydusfs.image.source): blobs of an image read in place
        # (layout files, archive members, registry ranges) instead of files in blob dirs
        self.ranges = ranges
        self._readers: dict[int, Any] = {}
        self.dirs = [os.fspath(d) for d in dirs]
        self.files = dict(files or {})
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        # chunk identity -> (bytes, checked against the digest)
        self._cache: collections.OrderedDict[tuple[object, ...], tuple[bytes, bool]] = collections.OrderedDict()
        self._cache_used = 0
        self.cache_bytes = cache_bytes
        self._ci_tables: dict[int, "CiTable | None"] = {}
        self._sizes: dict[int, int] = {}
        self.counters: collections.defaultdict[int, BlobCounters] = collections.defaultdict(BlobCounters)
        self._count_lock = threading.Lock()     # apart from _lock: counting never waits on the LRU

    # --- files ----------------------------------------------------------------------------
    def path_of(self, index: int) -> str | None:
        if index in self.files:
            return self.files[index]
        blob = self.blobs[index]
        ids = [blob.blob_id] + ([blob.raw_id] if blob.raw_id != blob.blob_id else [])
        for d in self.dirs:
            for name in (n for i in ids if _plain_name(i) for n in candidate_names(i)):
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    return p
        return None

    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is not None:
            return fd
        with self._lock:
            fd = self._fds.get(index)
            if fd is None:
                blob_id = self.blob_id(index)
                path = self.path_of(index)
                if path is None:
                    where = ", ".join(self.dirs) or "no blob directory given"
                    raise BlobError(blob_id, f"blob file not found (looked in: {where})")
                try:
                    fd = open_regular(path, "a blob")
                except OSError as e:
                    raise BlobError(blob_id, f"cannot open {path}: {e.strerror}") from None
                except NotRegularFileError as e:
                    raise BlobError(blob_id, f"{path}: {e.detail}") from None
                self._fds[index] = fd
            return fd

    def blob_id(self, index: int) -> str:
        return self.blobs[index].blob_id if 0 <= index < len(self.blobs) else f"#{index}"

    def _reader(self, index: int) -> Any:
        reader = self._readers.get(index)
        if reader is None:
            with self._lock:
                reader = self._readers.get(index)
                if reader is None:
                    assert self.ranges is not None
                    try:
                        reader = self._readers[index] = self.ranges(self.blob_id(index))
                    except NydusfsError as e:
                        raise BlobError(self.blob_id(index), str(e)) from None
        return reader

    def file_size(self, index: int) -> int:
        if self.ranges is not None:
            return int(self._reader(index).size)
        fd = self._fd(index)
        size = self._sizes.get(index)
        if size is None:
            size = self._sizes[index] = os.fstat(fd).st_size
        return size

    def read_raw(self, index: int, offset: int, size: int, chunk: int | None = None) -> bytes:
        reader = self._reader(index) if self.ranges is not None else None
        fd = self._fd(index) if reader is None else -1
        # check before reading: pread allocates `size` bytes up front, and offsets from a
        # corrupt bootstrap may not even fit in off_t
        have = self.file_size(index)
        if offset < 0 or size < 0 or offset + size > have:
            raise BlobError(self.blob_id(index), f"range {offset}+{size} lies outside the "
                            f"{have}-byte blob file", chunk=chunk, offset=offset)
        try:
            data = reader.pread(size, offset) if reader is not None else os.pread(fd, size, offset)
        except OSError as e:
            raise BlobError(self.blob_id(index), f"read failed: {e.strerror}", chunk=chunk,
                            offset=offset) from None
        with self._count_lock:
            counts = self.counters[index]
            counts.reads += 1
            counts.bytes += len(data)
        if len(data) != size:
            raise BlobError(self.blob_id(index), f"expected {size} bytes, the file has {len(data)} there",
                            chunk=chunk, offset=offset)
        return data

    # --- chunks ---------------------------------------------------------------------------
    def chunk_data(self, chunk: ChunkInfo, verify: bool = True) -> bytes:
        """A chunk's bytes through the LRU, keyed by everything that identifies them (two records
        naming one compressed range with different digests are two entries). Verified chunks
        are checked once, when they enter the cache."""
        key = chunk_identity(chunk)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (hit[1] or not verify):
                self._cache.move_to_end(key)
                self.counters[chunk.blob_index].chunk_hits += 1     # only ever under _lock
                return hit[0]
        with self._count_lock:
            self.counters[chunk.blob_index].chunk_misses += 1
        try:
            data = self.load_chunk(chunk, verify)
        except BaseException:
            with self._count_lock:
                self.counters[chunk.blob_index].errors += 1
            raise
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._cache_used -= len(old[0])
            if len(data) <= self.cache_bytes:
                self._cache[key] = (data, verify)
                self._cache_used += len(data)
                while self._cache_used > self.cache_bytes:
                    _, (dropped, _) = self._cache.popitem(last=False)
                    self._cache_used -= len(dropped)
        return data

    def load_chunk(self, chunk: ChunkInfo, verify: bool = True) -> bytes:
        """Read, decompress and (optionally) verify one chunk, bypassing the cache."""
        if not 0 <= chunk.blob_index < len(self.blobs):
            raise BlobError(f"#{chunk.blob_index}", "chunk refers to a blob index outside the blob table",
                            chunk=chunk.index)
        blob = self.blobs[chunk.blob_index]
        if not 0 < chunk.uncompressed_size <= MAX_CHUNK_SIZE or chunk.compressed_size > 2 * MAX_CHUNK_SIZE:
            raise BlobError(blob.blob_id, f"chunk sizes {chunk.compressed_size} (compressed) / "
                            f"{chunk.uncompressed_size} (uncompressed) are outside 1..{MAX_CHUNK_SIZE}",
                            chunk=chunk.index, offset=chunk.compressed_offset)
        if chunk.flags & _ENCRYPTED_CHUNK or blob.features & _ENCRYPTED_BLOB:
            raise BlobError(blob.blob_id, "encrypted chunks are not supported", chunk=chunk.index)
        if blob.features & _UNSUPPORTED_BLOB:
            raise BlobError(blob.blob_id, "zran/batch blobs are not supported", chunk=chunk.index)
        raw = self.read_raw(chunk.blob_index, chunk.compressed_offset, chunk.compressed_size, chunk.index)
        compressed = bool(chunk.flags & _COMPRESSED_CHUNK) or (
            chunk.compressed_size != chunk.uncompressed_size)
        if compressed:
            try:
                data = decompress(raw, blob.compressor, chunk.uncompressed_size)
            except ValueError as e:
                raise BlobError(blob.blob_id, f"cannot decompress ({blob.compressor}): {e}",
                                chunk=chunk.index, offset=chunk.compressed_offset) from None
        elif len(raw) != chunk.uncompressed_size:
            raise BlobError(blob.blob_id, f"uncompressed chunk is {len(raw)} bytes, the bootstrap "
                            f"says {chunk.uncompressed_size}", chunk=chunk.index,
                            offset=chunk.compressed_offset)
        else:
            data = raw
        if verify:
            if isinstance(chunk, NoDigestChunk):
                raise BlobError(blob.blob_id, "the image records no digest for this chunk, so its "
                                "bytes cannot be verified (reading without verification serves "
                                "them)", chunk=chunk.index, offset=chunk.compressed_offset)
            # a zeroed digest is a digest like any other: the bytes must match it
            got = digest(data, blob.digester)
            if got != chunk.block_id:
                raise BlobError(blob.blob_id, f"{blob.digester} digest mismatch: expected "
                                f"{chunk.block_id.hex()}, got {got.hex()}", chunk=chunk.index,
                                offset=chunk.compressed_offset)
        return data

    # --- RAFS v6 blob meta (chunk info array inside the blob) -----------------------------
    def ci_entry(self, index: int, ci_index: int) -> ChunkInfo | None:
        table = self._ci_tables.get(index, ...)
        if table is ...:
            try:
                table = self._load_ci_table(index)
            except (BlobError, FormatError):
                table = None
            self._ci_tables[index] = table
        if table is None:
            return None
        return table.entry(ci_index)

    def _load_ci_table(self, index: int) -> "CiTable | None":
        blob = self.blobs[index]
        e = blob.v6
        if e is None or not e.ci_compressed_size:
            return None
        v2 = bool(blob.features & BlobFeatures.CHUNK_INFO_V2)
        unit = 24 if v2 else 16
        # every entry describes a chunk of at least one byte stored in this blob file: the
        # file's size bounds the count before anything of that size is inflated or decoded
        most = min(MAX_CHUNKS_PER_BLOB, self.file_size(index))
        if e.ci_uncompressed_size > unit * most:
            raise BlobError(blob.blob_id, f"chunk info table of {e.ci_uncompressed_size} bytes "
                            f"declares more than the {most} chunks a {self.file_size(index)}-byte "
                            "blob file can hold", offset=e.ci_offset)
        raw = self.read_raw(index, e.ci_offset, e.ci_compressed_size)
        if e.ci_compressor != 0:
            algo = COMPRESSOR_NAMES.get(e.ci_compressor, f"unknown({e.ci_compressor})")
            try:
                raw = decompress(raw, algo, e.ci_uncompressed_size)
            except ValueError as err:
                raise BlobError(blob.blob_id, f"chunk info table does not decompress ({algo}): "
                                f"{err}", offset=e.ci_offset) from None
        header = BlobMetaHeader.decode(
            self.read_raw(index, e.ci_offset + e.ci_compressed_size, BLOB_META_HEADER_SIZE), 0)
        if header.s_magic != BLOB_META_MAGIC or header.s_magic2 != BLOB_META_MAGIC:
            return None
        return CiTable(index, raw, unit, v2, self._digest_array(index))

    def _digest_array(self, index: int) -> bytes:
        """The `blob.digest` section (chunk digests in index order), or b'' when absent."""
        from ..format.layer import detect

        try:
            source = self._reader(index) if self.ranges is not None else self._fd(index)
            layout = detect(source, self.path_of(index) or self.blob_id(index))
        except BlobError:
            return b""
        except (FormatError, OSError):
            return b""
        section = dict(layout.sections).get(b"blob.digest")
        if section is None or section.compressor != "none":
            return b""
        return self.read_raw(index, section.offset, section.size)

    def cached_bytes(self) -> int:
        return self._cache_used

    def stats(self) -> dict[int, dict[str, int]]:
        """BlobCounters of every blob read so far, by blob index."""
        with self._count_lock:
            return {i: c.as_dict() for i, c in sorted(self.counters.items())}

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
            self._sizes.clear()
            self._cache.clear()
            self._cache_used = 0


class CiTable:
    """A blob's chunk info array, decoded one entry at a time when a chunk index asks for it
    (an eager list would cost an object per declared entry)."""

    def __init__(self, blob_index: int, raw: bytes, unit: int, v2: bool, digests: bytes) -> None:
        self.blob_index = blob_index
        self.raw = raw
        self.unit = unit
        self.v2 = v2
        self.digests = digests
        self.count = len(raw) // unit

    def entry(self, i: int) -> ChunkInfo | None:
        if not 0 <= i < self.count:
            return None
        if self.v2:
            coff, csize, uoff, usize, flags = decode_ci_v2(self.raw, i * self.unit)
            cflag = ChunkFlags.COMPRESSED if flags & 1 else 0
        else:
            coff, csize, uoff, usize = decode_ci_v1(self.raw, i * self.unit)
            cflag = ChunkFlags.COMPRESSED if csize != usize else 0
        if not self.digests:   # nothing to check its bytes against: verification refuses it
            return NoDigestChunk(bytes(32), self.blob_index, int(cflag), csize, usize, coff, uoff, 0, i, 0)
        return ChunkInfo(self.digests[i * 32:(i + 1) * 32], self.blob_index, int(cflag), csize, usize,
                         coff, uoff, 0, i, 0)
