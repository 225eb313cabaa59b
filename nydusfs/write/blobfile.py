"""Append-only writer of a data blob: chunk data, then the meta sections of blob.md §7.

The blob id is the SHA-256 of every byte written except the `blob.digest` array (blob.md §6).
Writes go to an open file at a base position (1024 inside a layout-A layer, 0 otherwise) with
os.pwrite, so the caller can reserve room for headers in front.
"""

from __future__ import annotations

import hashlib
import os

from typing import Any

from ..format.blob import BLOB_META_MAGIC, BlobMetaHeader, TocEntry, blob_tar_header, encode_ci_v1
from ..format.record import align
from . import limits

# ci v1 entries (blob.md §7.3) pack a 40-bit compressed offset, a 44-bit uncompressed offset and
# 24-bit sizes; encode_ci_v1 masks them, so they are checked first
CI_V1_OFFSET_MAX = (1 << 40) - 1
CI_V1_UNCOMPRESSED_OFFSET_MAX = (1 << 44) - 1
CI_V1_SIZE_MAX = 1 << 24
TAR_SIZE_MAX = 8 ** 11 - 1


class BlobFile:
    def __init__(self, fd: int, base: int = 0) -> None:
        self.fd = fd
        self.base = base          # file position of blob byte 0
        self.size = 0             # bytes of blob written so far
        self.hash = hashlib.sha256()

    def write(self, data: bytes | bytearray, hashed: bool = True) -> int:
        """Append `data`; returns its offset inside the blob."""
        off = self.size
        view = memoryview(data)
        pos = self.base + off
        while view:
            n = os.pwrite(self.fd, view, pos)
            view = view[n:]
            pos += n
        self.size += len(data)
        if hashed:
            self.hash.update(data)
        return off

    def pad_to(self, unit: int) -> None:
        gap = align(self.size, unit) - self.size
        if gap:
            self.write(bytes(gap))

    def section_header(self, name: bytes, size: int) -> bytes:
        """The trailing 512-byte tar header of a layout-B section of `size` bytes."""
        # 11 octal digits: a larger size would widen the header and shift everything after it
        limits.check(f"layout B section {name.decode()}", "tar header", "size", size, TAR_SIZE_MAX)
        header = blob_tar_header(name, size)
        self.write(header)
        return header

    def blob_id(self) -> str:
        return self.hash.hexdigest()


def ci_v1(c: Any) -> bytes:
    """The blob meta (ci table) entry of chunk `c`, refusing offsets and sizes it cannot hold."""
    where = f"chunk {c.index} of the blob"
    limits.check(where, "blob meta ci entry", "compressed_offset", c.compressed_offset, CI_V1_OFFSET_MAX)
    limits.check(where, "blob meta ci entry", "uncompressed_offset", c.uncompressed_offset,
                 CI_V1_UNCOMPRESSED_OFFSET_MAX)
    limits.check(where, "blob meta ci entry", "compressed_size", c.compressed_size, CI_V1_SIZE_MAX)
    limits.check(where, "blob meta ci entry", "uncompressed_size", c.uncompressed_size, CI_V1_SIZE_MAX)
    return encode_ci_v1(c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                        c.uncompressed_size)


def meta_header(features: int, ci_compressor: int, entries: int, ci_offset: int,
                ci_compressed: int, ci_uncompressed: int) -> bytes:
    return limits.encode(BlobMetaHeader(
        s_magic=BLOB_META_MAGIC, s_features=features, s_ci_compressor=ci_compressor,
        s_ci_entries=entries, s_ci_offset=ci_offset, s_ci_compressed_size=ci_compressed,
        s_ci_uncompressed_size=ci_uncompressed, s_ci_zran_offset=0, s_ci_zran_size=0,
        s_ci_zran_count=0, s_reserved=bytes(4032), s_magic2=BLOB_META_MAGIC), "blob meta")


def toc_entry(name: bytes, flags: int, digest: bytes, offset: int, csize: int, usize: int) -> bytes:
    return limits.encode(TocEntry(
        flags=flags, reserved1=0, name=name.ljust(16, b"\0"), uncompressed_digest=digest,
        compressed_offset=offset, compressed_size=csize, uncompressed_size=usize,
        reserved2=bytes(48)), f"ToC entry {name.decode()}")


def sha256(data: bytes | bytearray) -> bytes:
    return hashlib.sha256(data).digest()
