"""RAFS v6 (EROFS) bootstrap records (spec: rafs-v6.md)."""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from ..errors import FormatError
from .record import Record, align, record

EROFS_MAGIC = 0xE0F5E1E2
SUPERBLOCK_OFFSET = 1024
EXT_SUPERBLOCK_OFFSET = 1152
DEVICE_TABLE_OFFSET = 1408
DEVT_SLOTOFF = DEVICE_TABLE_OFFSET // 128
FEATURE_COMPAT_RAFS_V6 = 0x4000_0000
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
FEATURE_INCOMPAT_RAFS_V6 = FEATURE_INCOMPAT_CHUNKED_FILE | FEATURE_INCOMPAT_DEVICE_TABLE
INODE_SLOT = 32
COMPACT_SIZE = 32
EXTENDED_SIZE = 64
DIRENT_SIZE = 12
CHUNK_ADDR_SIZE = 8
BLOB_ENTRY_SIZE = 256
DEVICE_SLOT_SIZE = 128
BLOCK_SIZE = 4096
V6_BLOCK_SEG_ALIGNMENT = 0x80000

# i_format: bit 0 version, bits 1..3 data layout
LAYOUT_FLAT_PLAIN = 0
LAYOUT_FLAT_INLINE = 2
LAYOUT_CHUNK_BASED = 4
CHUNK_FORMAT_INDEXES = 0x20
CHUNK_FORMAT_BLKBITS_MASK = 0x1F

# dirent file types
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)

# xattr name indexes -> prefix (2 and 3 are whole names with an empty suffix)
XATTR_PREFIXES = {
    1: b"user.",
    2: b"system.posix_acl_access",
    3: b"system.posix_acl_default",
    4: b"trusted.",
    6: b"security.",
}


@record
class ErofsSuperBlock(Record):
    STRUCTURE: ClassVar[str] = "EROFS superblock"
    SIZE: ClassVar[int] = 128
    FORMAT: ClassVar[str] = "<IIIBBHQQIIII16s16sIHHH38s"
    magic: int               # 0
    checksum: int            # 4
    feature_compat: int      # 8
    blkszbits: int           # 12
    sb_extslots: int         # 13
    root_nid: int            # 14
    inos: int                # 16
    build_time: int          # 24
    build_time_nsec: int     # 32
    blocks: int              # 36
    meta_blkaddr: int        # 40
    xattr_blkaddr: int       # 44
    uuid: bytes              # 48
    volume_name: bytes       # 64
    feature_incompat: int    # 80
    u: int                   # 84
    extra_devices: int       # 86
    devt_slotoff: int        # 88
    reserved: bytes          # 90


@record
class V6SuperBlockExt(Record):
    STRUCTURE: ClassVar[str] = "RAFS v6 extended superblock"
    SIZE: ClassVar[int] = 256
    FORMAT: ClassVar[str] = "<QQIIQQQII200s"
    s_flags: int                     # 0
    s_blob_table_offset: int         # 8
    s_blob_table_size: int           # 16
    s_chunk_size: int                # 20
    s_chunk_table_offset: int        # 24
    s_chunk_table_size: int          # 32
    s_prefetch_table_offset: int     # 40
    s_prefetch_table_size: int       # 48
    s_padding: int                   # 52
    s_reserved: bytes                # 56


@record
class DeviceSlot(Record):
    STRUCTURE: ClassVar[str] = "EROFS device slot"
    SIZE: ClassVar[int] = DEVICE_SLOT_SIZE
    FORMAT: ClassVar[str] = "<64sII56s"
    tag: bytes               # 0, blob id
    blocks: int              # 64
    mapped_blkaddr: int      # 68
    reserved: bytes          # 72


@record
class V6BlobEntry(Record):
    STRUCTURE: ClassVar[str] = "RAFS v6 blob table entry"
    SIZE: ClassVar[int] = BLOB_ENTRY_SIZE
    FORMAT: ClassVar[str] = "<64sIIIIIIQQIIQQQ32s32sQ8sI36s"
    blob_id: bytes               # 0
    blob_index: int              # 64
    chunk_size: int              # 68
    chunk_count: int             # 72
    compression_algo: int        # 76
    digest_algo: int             # 80
    features: int                # 84
    compressed_size: int         # 88
    uncompressed_size: int       # 96
    blob_toc_size: int           # 104
    ci_compressor: int           # 108
    ci_offset: int               # 112
    ci_compressed_size: int      # 120
    ci_uncompressed_size: int    # 128
    blob_toc_digest: bytes       # 136
    blob_meta_digest: bytes      # 168
    blob_meta_size: int          # 200
    cipher_iv: bytes             # 208
    cipher_algo: int             # 216
    reserved: bytes              # 220


@record
class InodeCompact(Record):
    STRUCTURE: ClassVar[str] = "EROFS compact inode"
    SIZE: ClassVar[int] = COMPACT_SIZE
    FORMAT: ClassVar[str] = "<HHHHIIIIHH4s"
    i_format: int            # 0
    i_xattr_icount: int      # 2
    i_mode: int              # 4
    i_nlink: int             # 6
    i_size: int              # 8
    i_mtime_delta: int       # 12, reserved for nydus; newer kernels add it to build_time
    i_u: int                 # 16
    i_ino: int               # 20
    i_uid: int               # 24
    i_gid: int               # 26
    i_reserved: bytes        # 28


@record
class InodeExtended(Record):
    STRUCTURE: ClassVar[str] = "EROFS extended inode"
    SIZE: ClassVar[int] = EXTENDED_SIZE
    FORMAT: ClassVar[str] = "<HHHHQIIIIQII16s"
    i_format: int            # 0
    i_xattr_icount: int      # 2
    i_mode: int              # 4
    i_reserved: int          # 6
    i_size: int              # 8
    i_u: int                 # 16
    i_ino: int               # 20
    i_uid: int               # 24
    i_gid: int               # 28
    i_mtime: int             # 32
    i_mtime_nsec: int        # 40
    i_nlink: int             # 44
    i_reserved2: bytes       # 48


@record
class Dirent(Record):
    STRUCTURE: ClassVar[str] = "EROFS dirent"
    SIZE: ClassVar[int] = DIRENT_SIZE
    FORMAT: ClassVar[str] = "<QHBB"
    nid: int                 # 0
    nameoff: int             # 8
    file_type: int           # 10
    reserved: int            # 11


@record
class ChunkAddr(Record):
    STRUCTURE: ClassVar[str] = "RAFS v6 chunk index"
    SIZE: ClassVar[int] = CHUNK_ADDR_SIZE
    FORMAT: ClassVar[str] = "<HHI"
    advise: int              # 0, low 16 bits of the ci index
    device_id: int           # 2, blob_index + 1 | ci index bits 16..23 << 8
    blkaddr: int             # 4, uncompressed offset / block size

    @property
    def blob_index(self) -> int:
        return (self.device_id & 0xFF) - 1

    @property
    def ci_index(self) -> int:
        return ((self.device_id >> 8) << 16) | self.advise

    @classmethod
    def make(cls, blob_index: int, ci_index: int, blkaddr: int) -> "ChunkAddr":
        return cls(ci_index & 0xFFFF, ((blob_index + 1) & 0xFF) | (((ci_index >> 16) & 0xFF) << 8),
                   blkaddr)


@record
class XattrIbodyHeader(Record):
    STRUCTURE: ClassVar[str] = "EROFS xattr header"
    SIZE: ClassVar[int] = 12
    FORMAT: ClassVar[str] = "<IB7s"
    h_name_filter: int       # 0
    h_shared_count: int      # 4
    h_reserved: bytes        # 5


def inode_class(i_format: int) -> type[InodeCompact] | type[InodeExtended]:
    return InodeExtended if i_format & 1 else InodeCompact


def data_layout(i_format: int) -> int:
    return (i_format >> 1) & 0x7


def xattr_area_size(icount: int) -> int:
    return 0 if icount == 0 else 12 + 4 * (icount - 1)


def file_type_of(mode: int) -> int:
    fmt = mode & 0o170000
    return {
        0o100000: FT_REG, 0o040000: FT_DIR, 0o020000: FT_CHR, 0o060000: FT_BLK,
        0o010000: FT_FIFO, 0o140000: FT_SOCK, 0o120000: FT_SYMLINK,
    }.get(fmt, FT_UNKNOWN)


# --- inline xattrs

def split_xattr_name(name: bytes) -> tuple[int, bytes]:
    """Name index and suffix for a full xattr name; ValueError for prefixes EROFS cannot keep."""
    for index in (2, 3):
        if name == XATTR_PREFIXES[index]:
            return index, b""
    for index in (1, 4, 6):
        prefix = XATTR_PREFIXES[index]
        if name.startswith(prefix) and len(name) > len(prefix):
            return index, name[len(prefix):]
    raise ValueError(name)


def encode_xattrs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Inline xattr area (header + entries), or b'' without xattrs. i_xattr_icount = (len-12)/4+1."""
    if not pairs:
        return b""
    out = [XattrIbodyHeader(0, 0, bytes(7)).encode()]
    for name, value in pairs:
        index, suffix = split_xattr_name(name)
        entry = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        out.append(entry + bytes(align(len(entry), 4) - len(entry)))
    return b"".join(out)


def xattr_icount(area: bytes) -> int:
    return 0 if not area else (len(area) - 12) // 4 + 1


def decode_xattrs(buf: Any, off: int, icount: int) -> list[tuple[bytes, bytes]]:
    _header, entries = decode_xattr_area(buf, off, icount)
    return [(XATTR_PREFIXES[index] + suffix, value) for index, suffix, value in entries]


def decode_xattr_area(buf: Any, off: int, icount: int
                      ) -> tuple[XattrIbodyHeader, list[tuple[int, bytes, bytes]]]:
    """Header and raw (name index, suffix, value) entries of an inline xattr area."""
    size = xattr_area_size(icount)
    end = off + size
    if end > len(buf):
        raise FormatError("EROFS inline xattrs", field="i_xattr_icount", offset=off,
                          expected=f"an area inside the file ({len(buf) - off} bytes left)",
                          found=icount)
    header = XattrIbodyHeader.decode(buf, off)
    if header.h_shared_count:
        raise XattrIbodyHeader.field_error("h_shared_count", off, expected=0, found=header.h_shared_count,
                                           hint="shared xattrs are not used by RAFS v6")
    entries = []
    pos = off + 12
    while pos < end:
        if pos + 4 > end:
            raise FormatError("EROFS xattr entry", offset=pos, expected="4-byte entry header",
                              found=f"{end - pos} bytes")
        name_len, index, value_size = struct.unpack_from("<BBH", buf, pos)
        if index not in XATTR_PREFIXES:
            raise FormatError("EROFS xattr entry", field="e_name_index", offset=pos + 1,
                              expected="one of 1, 2, 3, 4, 6", found=index)
        stop = pos + 4 + name_len + value_size
        if stop > end:
            raise FormatError("EROFS xattr entry", field="e_value_size", offset=pos + 2,
                              expected=f"at most {end - pos - 4 - name_len}", found=value_size)
        entries.append((index, bytes(buf[pos + 4:pos + 4 + name_len]),
                        bytes(buf[pos + 4 + name_len:stop])))
        pos = align(stop, 4)
    return header, entries


def encode_xattr_area(header: XattrIbodyHeader, entries: list[tuple[int, bytes, bytes]]) -> bytes:
    """Inverse of `decode_xattr_area` (entries padded to 4 bytes)."""
    out = [header.encode()]
    for index, suffix, value in entries:
        entry = struct.pack("<BBH", len(suffix), index, len(value)) + suffix + value
        out.append(entry + bytes(align(len(entry), 4) - len(entry)))
    return b"".join(out)


# --- directory blocks

def encode_dir_blocks(entries: list[tuple[bytes, int, int]], bs: int) -> list[bytes]:
    """Pack sorted (name, nid, file_type) entries into directory blocks; the last may be short."""
    blocks: list[bytes] = []
    cur: list[tuple[bytes, int, int]] = []
    used = 0
    for entry in entries:
        need = DIRENT_SIZE + len(entry[0])
        if cur and used + need > bs:
            blocks.append(_encode_dir_block(cur, bs, full=True))
            cur, used = [], 0
        cur.append(entry)
        used += need
    if cur or not blocks:
        blocks.append(_encode_dir_block(cur, bs, full=False))
    return blocks


def _encode_dir_block(entries: list[tuple[bytes, int, int]], bs: int, full: bool) -> bytes:
    nameoff = DIRENT_SIZE * len(entries)
    heads, names = [], []
    for name, nid, ftype in entries:
        heads.append(Dirent(nid, nameoff, ftype, 0).encode())
        names.append(name)
        nameoff += len(name)
    raw = b"".join(heads) + b"".join(names)
    return raw + bytes(bs - len(raw)) if full else raw


_DIRENT = struct.Struct("<QHBB")


def decode_dir_block(block: Any, base: int) -> list[tuple[bytes, int, int]]:
    """(name, nid, file type) of the entries of one directory block (already cut to its used
    length); `base` for errors. The hot path of directory reads: tuples, not records."""
    raw = bytes(block)
    size = len(raw)
    if size < DIRENT_SIZE:
        return [(name, d.nid, d.file_type) for d, name in decode_dir_records(block, base)]
    first_off = _DIRENT.unpack_from(raw, 0)[1]
    count, rem = divmod(first_off, DIRENT_SIZE)
    if rem or count == 0 or first_off > size:
        return [(name, d.nid, d.file_type) for d, name in decode_dir_records(block, base)]
    heads = list(_DIRENT.iter_unpack(raw[:first_off]))
    out = []
    for i, (nid, off, ftype, _reserved) in enumerate(heads):
        end = heads[i + 1][1] if i + 1 < count else size
        if not first_off <= off < end <= size:
            return [(name, d.nid, d.file_type) for d, name in decode_dir_records(block, base)]
        name = raw[off:end]
        if i + 1 == count:
            nul = name.find(b"\0")
            if nul >= 0:
                name = name[:nul]
                if not name:
                    return [(n, d.nid, d.file_type) for d, n in decode_dir_records(block, base)]
        out.append((name, nid, ftype))
    return out


def decode_dir_records(block: Any, base: int) -> list[tuple[Dirent, bytes]]:
    """(dirent record, name) of each entry of one directory block."""
    size = len(block)
    if size < DIRENT_SIZE:
        raise FormatError("EROFS directory block", field="i_size", offset=base, expected="at least one dirent",
                          found=f"{size} bytes")
    first = Dirent.decode(block, 0)
    count, rem = divmod(first.nameoff, DIRENT_SIZE)
    if rem or count == 0 or first.nameoff > size:
        raise Dirent.field_error("nameoff", base, expected=f"a multiple of 12 within {size}", found=first.nameoff)
    heads = [first] + [Dirent.decode(block, i * DIRENT_SIZE) for i in range(1, count)]
    out = []
    for i, d in enumerate(heads):
        end = heads[i + 1].nameoff if i + 1 < count else size
        if not (first.nameoff <= d.nameoff < end <= size):
            raise Dirent.field_error("nameoff", base + i * DIRENT_SIZE,
                                     expected=f"increasing offsets inside {first.nameoff}..{size}",
                                     found=d.nameoff)
        name = bytes(block[d.nameoff:end])
        if i + 1 == count:
            nul = name.find(b"\0")
            if nul >= 0:
                name = name[:nul]
        if not name:
            raise FormatError("EROFS dirent", field="name", offset=base + d.nameoff,
                              expected="a non-empty name", found=b"")
        out.append((d, name))
    return out


def encode_dir_records(records: list[tuple[Dirent, bytes]], length: int) -> bytes:
    """Inverse of `decode_dir_records`: heads, names at their nameoff, zeros up to `length`."""
    out = bytearray(length)
    for i, (d, name) in enumerate(records):
        out[i * DIRENT_SIZE:(i + 1) * DIRENT_SIZE] = d.encode()
        out[d.nameoff:d.nameoff + len(name)] = name
    return bytes(out)


def chunk_format(chunk_size: int, blkszbits: int) -> int:
    bits = chunk_size.bit_length() - 1
    return CHUNK_FORMAT_INDEXES | (bits - blkszbits)
