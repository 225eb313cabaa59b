"""What a chunk map must satisfy before its bytes can be trusted, checked against the rest of
the image.

Digests prove that a chunk's bytes are the bytes its record names; they cannot prove that the
records place those bytes where they belong. `file_problem` checks one file's chunk list (the
read path refuses a file that fails it), `ImageChunks` the chunks of a whole image against each
other (dump --verify and check).

Holes: RAFS v5 places chunk i at file offset i * chunk_size and every chunk but the last is
chunk_size long, unless the inode has the HAS_HOLE flag (then chunks may skip slots, which read
as zeros; no upstream builder sets it). RAFS v6 has one chunk index per chunk_size slot and
nydus never writes the EROFS null address, so a v6 file has no holes.
"""

from __future__ import annotations

import array
import itertools
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..format import v6
from ..format.blob import digest
from ..format.flags import BlobFeatures, ChunkFlags, InodeFlagsV5
from ..format.v5 import ChunkInfo, V5Inode
from ..format.v6 import InodeCompact, InodeExtended

if TYPE_CHECKING:
    from .base import Image

V6_DATA_ALIGN = 4096        # RAFS v6 places chunks at 4 KiB-aligned uncompressed offsets


class NoDigestChunk(ChunkInfo):
    """A chunk whose metadata records no digest (RAFS v6 tarfs, or blob meta without a digest
    array); `block_id` is zeros only because the record needs a value. Verification refuses it:
    its bytes cannot be checked."""

    __slots__ = ()


_COMPRESSED = int(ChunkFlags.COMPRESSED)   # a plain int: IntFlag's `&` costs a Python call


def chunk_identity(c: ChunkInfo) -> tuple[int, int, int, int, bytes, bool, bool]:
    """Everything that determines a chunk's bytes and how they are checked: caches and the
    verifier key on this, never on the offset alone."""
    return (c.blob_index, c.compressed_offset, c.compressed_size, c.uncompressed_size, c.block_id,
            bool(c.flags & _COMPRESSED), isinstance(c, NoDigestChunk))


_IDENTITY = struct.Struct("<IQQQ32s??")


def packed_identity(c: ChunkInfo) -> bytes:
    """`chunk_identity` as one bytes object: sets of identities over a whole image (dump
    --verify) keep about 100 bytes per chunk instead of a tuple and its ints."""
    return _IDENTITY.pack(*chunk_identity(c))


def chunk_problem(image: Image, c: ChunkInfo) -> str | None:
    """A chunk record that contradicts the blob table or the superblock."""
    if not 0 <= c.blob_index < len(image.blobs):
        return f"blob_index {c.blob_index} is outside the blob table ({len(image.blobs)} blobs)"
    if image.tarfs:
        return None     # synthesized from the inode's block addresses: nothing recorded to lie
    blob = image.blobs[c.blob_index]
    if not 0 < c.uncompressed_size <= image.chunk_size:
        return f"uncompressed_size {c.uncompressed_size} is outside 1..{image.chunk_size} (the chunk size)"
    if c.compressed_size == 0:
        return "compressed_size is 0"
    compressed = bool(c.flags & ChunkFlags.COMPRESSED)
    if compressed and blob.compressor == "none":
        return "flags say COMPRESSED but the blob's compressor is none"
    if not compressed and c.compressed_size != c.uncompressed_size:
        return (f"flags say not compressed but compressed_size {c.compressed_size} differs from "
                f"uncompressed_size {c.uncompressed_size}")
    if blob.uncompressed_size and c.uncompressed_offset + c.uncompressed_size > blob.uncompressed_size:
        return (f"uncompressed range {c.uncompressed_offset}+{c.uncompressed_size} ends past the "
                f"blob's uncompressed size {blob.uncompressed_size}")
    if image.version == 6 and c.uncompressed_offset % V6_DATA_ALIGN:
        return f"uncompressed_offset {c.uncompressed_offset} is not 4 KiB aligned (RAFS v6)"
    if blob.chunk_count and c.index >= blob.chunk_count:
        return f"index {c.index} is not below the blob's chunk_count {blob.chunk_count}"
    return None


def file_problem(image: Image, ino: int) -> tuple[ChunkInfo | None, str] | None:
    """(offending chunk or None, message) when the chunk map of regular file `ino` is not one
    the format allows for its size; None when it is."""
    node = image.inode(ino)
    chunks = image.chunks(ino)
    rec = node.record
    if isinstance(rec, (InodeCompact, InodeExtended)) and v6.data_layout(rec.i_format) != v6.LAYOUT_CHUNK_BASED:
        return None     # data inside the bootstrap (EROFS plain or inline): no chunks to tile
    size, cs = node.size, image.chunk_size
    tarfs = image.tarfs
    holes = isinstance(rec, V5Inode) and bool(rec.i_flags & InodeFlagsV5.HAS_HOLE)
    placed = image.chunk_place_problem(ino)
    if placed is not None:
        c = chunks[placed[0]]
        return c, f"chunk {placed[0]} (blob {c.blob_index} index {c.index}): {placed[1]}"
    pos = 0
    seen: dict[tuple[int, str, int], ChunkInfo] = {}
    ranges: list[tuple[int, int, int]] = []     # (blob, uncompressed start, end) per distinct chunk
    for i, c in enumerate(chunks):
        bad = chunk_problem(image, c)
        if bad:
            return c, f"{_what(i, c)}: {bad}"
        if c.file_offset < pos:
            return c, (f"{_what(i, c)}: file_offset {c.file_offset} lies before the end of the previous "
                       f"chunk ({pos}): chunks unsorted or overlapping")
        end = c.file_offset + c.uncompressed_size
        if end > size:
            return c, f"{_what(i, c)}: file range {c.file_offset}+{c.uncompressed_size} ends past the file size {size}"
        if not holes and not tarfs:
            if c.file_offset != i * cs:
                return c, f"{_what(i, c)}: file_offset {c.file_offset}, expected {i * cs} (chunk {i} of {cs} bytes)"
            if c.uncompressed_size != min(cs, size - c.file_offset):
                return c, (f"{_what(i, c)}: uncompressed_size {c.uncompressed_size}, expected "
                           f"{min(cs, size - c.file_offset)} for file offset {c.file_offset} of {size}")
        key = _name(image, c)
        first = seen.get(key)
        if first is None:
            seen[key] = c
            ranges.append((c.blob_index, c.uncompressed_offset, c.uncompressed_offset + c.uncompressed_size))
        elif _differs(first, c):
            return c, f"{_what(i, c)}: the same chunk ({key[1]} {key[2]}) is described differently earlier in the file"
        pos = end
    if not holes and pos != size:
        return None, f"the chunks cover {pos} of {size} bytes"
    if isinstance(rec, V5Inode):
        # RAFS v5 keeps a digest of the file's chunk digests: chunks reordered, swapped for other
        # chunks of the blob or edited show here even where each one matches its own digest
        if rec.i_digest != digest(b"".join(c.block_id for c in chunks), image.digester):
            return None, "i_digest does not match the digest of the chunk digests"
    ranges.sort()
    for (b1, s1, e1), (b2, s2, e2) in itertools.pairwise(ranges):
        if b1 == b2 and s2 < e1:
            return None, (f"two chunks of blob {b1} overlap in the uncompressed blob: "
                          f"{s1}..{e1} and {s2}..{e2}")
    return None


def _what(i: int, c: ChunkInfo) -> str:
    """Chunk `i` of a file in a message (built only when there is one to show)."""
    return f"chunk {i} (blob {c.blob_index} index {c.index})"


def show_path(path: bytes) -> str:
    """A path from the image inside a message: every non-printable or non-ASCII byte escaped."""
    return repr(path)[2:-1]


def _name(image: Image, c: ChunkInfo) -> tuple[int, str, int]:
    """What names one chunk of a blob: its index, where the blob table says how many chunks
    the blob has; else (pre-2021 RAFS v5, which left `index` 0) its compressed offset."""
    blob = image.blobs[c.blob_index] if 0 <= c.blob_index < len(image.blobs) else None
    if blob is not None and blob.chunk_count:
        return (c.blob_index, "index", c.index)
    return (c.blob_index, "offset", c.compressed_offset)


# What a record claims about its chunk, packed: block_id, flags, compressed offset and size,
# uncompressed offset and size. Packed bytes (one object) rather than a tuple of six values
# (seven objects): the audit keeps one per distinct chunk of the image.
_SIGNATURE = struct.Struct("<32sIQQQQ")
# one distinct chunk of the image: its signature, blob, name (index or offset), the first path
_RECORD = struct.Struct(_SIGNATURE.format + "IQI")
_SIG_END = _SIGNATURE.size


def _signature(c: ChunkInfo) -> bytes:
    return _SIGNATURE.pack(c.block_id, c.flags, c.compressed_offset, c.compressed_size,
                           c.uncompressed_offset, c.uncompressed_size)


def _differs(a: ChunkInfo, b: ChunkInfo) -> bool:
    return _signature(a) != _signature(b)


def _key(image: Image, c: ChunkInfo) -> int:
    """`_name` as one int (an int costs less than a tuple of three)."""
    b, kind, n = _name(image, c)
    return (n << 1 | (kind == "offset")) << 32 | b


class ImageChunks:
    """Chunks of a whole image checked against each other: a (blob, index) names one chunk, and
    distinct chunks of a blob occupy disjoint compressed and uncompressed ranges.

    Memory: one fixed-size record per distinct chunk, all in one bytearray (one allocation,
    given back whole when the audit ends, where a million small objects would leave their
    memory scattered), found by chunk name through a 4-byte slot per chunk the blob table
    declares (a dict from one int per name for names outside it, or when the bootstrap is too
    small to hold that many chunks), and one list slot per file that has chunks (its path is
    shared with the caller's)."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self._first: dict[int, int] = {}
        # slot of chunk i of blob b: _base[b] + i, holding its record's number + 1 (0: none)
        self._base: list[int] = []
        declared = 0
        for b in image.blobs:
            self._base.append(declared)
            declared += b.chunk_count
        if declared > image.size // 8:  # a count no bootstrap of this size could back
            self._base = []
            declared = 0
        self._slots = array.array("I", bytes(4 * declared))
        self._records = bytearray()
        self._paths: list[bytes] = []
        self._problems: list[tuple[bytes, ChunkInfo | None, str]] = []

    def add(self, path: bytes, c: ChunkInfo) -> None:
        b = c.blob_index
        slot = -1
        if 0 <= b < len(self._base) and c.index < self.image.blobs[b].chunk_count:
            slot = self._base[b] + c.index
            first: int | None = self._slots[slot] - 1
            if first == -1:
                first = None
        else:
            key = _key(self.image, c)
            first = self._first.get(key)
        sig = _signature(c)
        if first is None:
            paths = self._paths
            if not paths or paths[-1] is not path:
                paths.append(path)
            _, kind, name = _name(self.image, c)
            number = len(self._records) // _RECORD.size
            if slot >= 0:
                self._slots[slot] = number + 1
            else:
                self._first[key] = number
            self._records += _RECORD.pack(c.block_id, c.flags, c.compressed_offset, c.compressed_size,
                                          c.uncompressed_offset, c.uncompressed_size, c.blob_index,
                                          name, len(paths) - 1)
        else:
            at = first * _RECORD.size
            if self._records[at:at + _SIG_END] != sig:
                _, kind, name = _name(self.image, c)
                where = self._paths[_RECORD.unpack_from(self._records, at)[-1]]
                self._problems.append((path, c, (
                    f"chunk {kind} {name} of blob {c.blob_index} is described differently here "
                    f"and at {show_path(where)}")))

    def problems(self) -> Iterator[tuple[bytes, ChunkInfo | None, str]]:
        """The problems found; consumes the records (call once, after every `add`)."""
        yield from self._problems
        self._first = {}
        self._slots = array.array("I")
        blobs = self.image.blobs
        records, size = self._records, _RECORD.size
        count = len(records) // size

        def record(i: int) -> tuple[int, ...]:
            return _RECORD.unpack_from(records, i * size)

        def audited(f: tuple[int, ...]) -> bool:
            # ZRAN / BATCH: several chunks share a stream (reported per chunk / not supported)
            return 0 <= f[6] < len(blobs) and not blobs[f[6]].features & (BlobFeatures.ZRAN | BlobFeatures.BATCH)

        for kind, start, length in (("compressed", 2, 3), ("uncompressed", 4, 5)):
            # one int per record (blob, start, length, name, record number) sorted in place:
            # a list of tuples would cost several times the records themselves
            order = [(((f[6] << 64 | f[start]) << 64 | f[length]) << 64 | f[7]) << 32 | i
                     for i in range(count) if audited(f := record(i))]
            order.sort()
            prev: tuple[int, ...] | None = None
            for o in order:
                f = record(o & 0xFFFFFFFF)
                if prev is not None and prev[6] == f[6] and f[start] < prev[start] + prev[length]:
                    yield self._paths[f[8]], None, (
                        f"chunks {prev[7]} and {f[7]} of blob {f[6]} overlap in the {kind} blob: "
                        f"{prev[start]}+{prev[length]} and {f[start]}+{f[length]}")
                prev = f
            del order
        self._records = bytearray()
        for pos, c in self.image.table_chunks():
            if not 0 <= c.blob_index < len(blobs):
                yield b"", None, (f"chunk table entry at offset {pos}: blob_index {c.blob_index} "
                                  f"is outside the blob table ({len(blobs)} blobs)")
