"""RAFS v5 bootstrap records (spec: rafs-v5.md)."""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from ..errors import FormatError
from .record import Record, align, record

RAFS_V5_MAGIC = 0x52414653
RAFS_V5_VERSION = 0x500
SUPERBLOCK_SIZE = 8192
ALIGNMENT = 8
INODE_SIZE = 128
CHUNK_INFO_SIZE = 80
EXT_BLOB_ENTRY_SIZE = 64
MAX_NAME = 255
ROOT_INO = 1


@record
class V5SuperBlock(Record):
    STRUCTURE: ClassVar[str] = "RAFS v5 superblock"
    SIZE: ClassVar[int] = SUPERBLOCK_SIZE
    FORMAT: ClassVar[str] = "<IIIIQQQQQIIIIQ8112s"
    s_magic: int                         # 0
    s_fs_version: int                    # 4
    s_sb_size: int                       # 8
    s_block_size: int                    # 12, the chunk size
    s_flags: int                         # 16
    s_inodes_count: int                  # 24
    s_inode_table_offset: int            # 32
    s_prefetch_table_offset: int         # 40
    s_blob_table_offset: int             # 48
    s_inode_table_entries: int           # 56
    s_prefetch_table_entries: int        # 60
    s_blob_table_size: int               # 64, bytes incl. padding
    s_extended_blob_table_entries: int   # 68
    s_extended_blob_table_offset: int    # 72
    s_reserved: bytes                    # 80


@record
class V5Inode(Record):
    STRUCTURE: ClassVar[str] = "RAFS v5 inode"
    SIZE: ClassVar[int] = INODE_SIZE
    FORMAT: ClassVar[str] = "<32sQQIIIIQQQIIIHHIIQ8s"
    i_digest: bytes          # 0
    i_parent: int            # 32, parent's inode number (0 for root)
    i_ino: int               # 40
    i_uid: int               # 48
    i_gid: int               # 52
    i_projid: int            # 56
    i_mode: int              # 60
    i_size: int              # 64
    i_blocks: int            # 72
    i_flags: int             # 80
    i_nlink: int             # 88
    i_child_index: int       # 92
    i_child_count: int       # 96
    i_name_size: int         # 100
    i_symlink_size: int      # 102
    i_rdev: int              # 104
    i_mtime_nsec: int        # 108
    i_mtime: int             # 112
    i_reserved: bytes        # 120


@record
class ChunkInfo(Record):
    """RafsV5ChunkInfo: v5 per-file chunk records and the v6 chunk table entries."""

    STRUCTURE: ClassVar[str] = "RAFS chunk info"
    SIZE: ClassVar[int] = CHUNK_INFO_SIZE
    FORMAT: ClassVar[str] = "<32sIIIIQQQII"
    block_id: bytes              # 0, digest of the uncompressed chunk
    blob_index: int              # 32
    flags: int                   # 36
    compressed_size: int         # 40
    uncompressed_size: int       # 44
    compressed_offset: int       # 48
    uncompressed_offset: int     # 56
    file_offset: int             # 64
    index: int                   # 72, sequence number inside its blob
    crc32: int                   # 76


@record
class V5ExtBlobEntry(Record):
    STRUCTURE: ClassVar[str] = "RAFS v5 extended blob table entry"
    SIZE: ClassVar[int] = EXT_BLOB_ENTRY_SIZE
    FORMAT: ClassVar[str] = "<IIQQ40s"
    chunk_count: int             # 0
    features: int                # 4
    uncompressed_size: int       # 8
    compressed_size: int         # 16
    reserved: bytes              # 24


# --- blob table: u32 readahead_offset | u32 readahead_size | id | NUL (between entries only)

def decode_blob_table(buf: Any, off: int, size: int) -> list[tuple[int, int, bytes]]:
    if off < 0 or off + size > len(buf):
        raise FormatError("RAFS v5 blob table", offset=off, expected=f"{size} bytes",
                          found=f"{max(0, len(buf) - off)} bytes", hint="table runs past the end")
    raw = bytes(buf[off:off + size])
    entries = []
    pos = 0
    while len(raw) - pos > 8:
        ra_off, ra_size = struct.unpack_from("<II", raw, pos)
        end = raw.find(b"\0", pos + 8)
        if end < 0:
            end = len(raw)
        blob_id = raw[pos + 8:end]
        if not blob_id:
            break  # zero padding after the last entry
        entries.append((ra_off, ra_size, blob_id))
        pos = end + 1
    return entries


def encode_blob_table(entries: list[tuple[int, int, bytes]]) -> bytes:
    if not entries:
        return b""
    parts = [struct.pack("<II", ra_off, ra_size) + blob_id for ra_off, ra_size, blob_id in entries]
    raw = b"\0".join(parts)
    return raw + bytes(align(len(raw), ALIGNMENT) - len(raw))


# --- xattrs: u64 size | (u32 pair_size | name NUL value)* | pad to 8

def decode_xattrs(buf: Any, off: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """Return the pairs and the on-disk size of the whole table (header and padding)."""
    if off + 8 > len(buf):
        raise FormatError("RAFS v5 xattr table", field="size", offset=off,
                          expected="8 bytes", found=f"{max(0, len(buf) - off)} bytes")
    (size,) = struct.unpack_from("<Q", buf, off)
    end = off + 8 + size
    if end > len(buf):
        raise FormatError("RAFS v5 xattr table", field="size", offset=off,
                          expected=f"at most {len(buf) - off - 8}", found=size,
                          hint="xattr table runs past the end of the file")
    pairs = []
    pos = off + 8
    while pos < end:
        if pos + 4 > end:
            raise FormatError("RAFS v5 xattr table", field="pair_size", offset=pos,
                              expected="4 bytes", found=f"{end - pos} bytes")
        (pair_size,) = struct.unpack_from("<I", buf, pos)
        if pair_size == 0 or pos + 4 + pair_size > end:
            raise FormatError("RAFS v5 xattr table", field="pair_size", offset=pos,
                              expected=f"1..{end - pos - 4}", found=pair_size)
        pair = bytes(buf[pos + 4:pos + 4 + pair_size])
        nul = pair.find(b"\0")
        if nul <= 0:
            raise FormatError("RAFS v5 xattr table", field="name", offset=pos + 4,
                              expected="a non-empty NUL-terminated name", found=pair[:32])
        pairs.append((pair[:nul], pair[nul + 1:]))
        pos += 4 + pair_size
    return pairs, 8 + align(size, ALIGNMENT)


def encode_xattrs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack("<I", len(n) + 1 + len(v)) + n + b"\0" + v for n, v in pairs)
    return struct.pack("<Q", len(body)) + body + bytes(align(len(body), ALIGNMENT) - len(body))


def xattr_payload_size(pairs: list[tuple[bytes, bytes]]) -> int:
    """What i_blocks counts for xattrs: sum of (4 + name + 1 + value)."""
    return sum(4 + len(n) + 1 + len(v) for n, v in pairs)


def dir_size(child_names: list[bytes]) -> int:
    """Directory pseudo size of the repeatable-build rules (rafs-v5.md §6.5)."""
    d = sum(len(n) + 8 for n in child_names)
    return 4096 if d == 0 else align(d, 4096)


def inode_blocks(size: int, pairs: list[tuple[bytes, bytes]]) -> int:
    extra = align(xattr_payload_size(pairs), ALIGNMENT) if pairs else 0
    return (size + extra + 511) // 512
