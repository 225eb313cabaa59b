"""Record layouts against known answers written out from the upstream definitions.

Each table below was typed from an upstream source file (named above the table), not from
nydusfs/format/: field by field, its byte offset and size. The tests then check nydusfs's records
three ways that do not go through the record's own offset bookkeeping: a record built with a
distinct value in every field encodes each value at the upstream offset, a buffer packed from the
table alone decodes to those values, and the table covers every byte of the record. Swapping two
fields of any record (in its declaration or in its struct format) breaks at least one of these,
without any fixture.

Where nydusfs names a field differently from upstream, the table gives both names ("ours
(upstream)"); where upstream renamed a reserved field in a later version, the comment says so.
"""

from __future__ import annotations

import dataclasses
import inspect
import struct

import pytest

from nydusfs.format import blob, layer, record, v5, v6
from nydusfs.format.blob import BlobMetaHeader, TocEntry
from nydusfs.format.v5 import ChunkInfo, V5ExtBlobEntry, V5Inode, V5SuperBlock
from nydusfs.format.v6 import (
    ChunkAddr,
    DeviceSlot,
    Dirent,
    ErofsSuperBlock,
    InodeCompact,
    InodeExtended,
    V6BlobEntry,
    V6SuperBlockExt,
    XattrIbodyHeader,
)

# (our field, upstream field, offset, size); 'bytes' fields are u8 arrays upstream, the rest are
# little-endian unsigned integers of that size.

# dragonflyoss/nydus rafs/src/metadata/layout/v5.rs, struct RafsV5SuperBlock (8192 bytes,
# RAFSV5_SUPERBLOCK_RESERVED_SIZE = 8192 - 80)
V5_SUPERBLOCK = [
    ("s_magic", "s_magic", 0, 4),
    ("s_fs_version", "s_fs_version", 4, 4),
    ("s_sb_size", "s_sb_size", 8, 4),
    ("s_block_size", "s_block_size", 12, 4),
    ("s_flags", "s_flags", 16, 8),
    ("s_inodes_count", "s_inodes_count", 24, 8),
    ("s_inode_table_offset", "s_inode_table_offset", 32, 8),
    ("s_prefetch_table_offset", "s_prefetch_table_offset", 40, 8),
    ("s_blob_table_offset", "s_blob_table_offset", 48, 8),
    ("s_inode_table_entries", "s_inode_table_entries", 56, 4),
    ("s_prefetch_table_entries", "s_prefetch_table_entries", 60, 4),
    ("s_blob_table_size", "s_blob_table_size", 64, 4),
    ("s_extended_blob_table_entries", "s_extended_blob_table_entries", 68, 4),
    ("s_extended_blob_table_offset", "s_extended_blob_table_offset", 72, 8),
    ("s_reserved", "s_reserved", 80, 8112),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v5.rs, struct RafsV5Inode (128 bytes)
V5_INODE = [
    ("i_digest", "i_digest", 0, 32),
    ("i_parent", "i_parent", 32, 8),
    ("i_ino", "i_ino", 40, 8),
    ("i_uid", "i_uid", 48, 4),
    ("i_gid", "i_gid", 52, 4),
    ("i_projid", "i_projid", 56, 4),
    ("i_mode", "i_mode", 60, 4),
    ("i_size", "i_size", 64, 8),
    ("i_blocks", "i_blocks", 72, 8),
    ("i_flags", "i_flags", 80, 8),
    ("i_nlink", "i_nlink", 88, 4),
    ("i_child_index", "i_child_index", 92, 4),
    ("i_child_count", "i_child_count", 96, 4),
    ("i_name_size", "i_name_size", 100, 2),
    ("i_symlink_size", "i_symlink_size", 102, 2),
    ("i_rdev", "i_rdev", 104, 4),
    ("i_mtime_nsec", "i_mtime_nsec", 108, 4),
    ("i_mtime", "i_mtime", 112, 8),
    ("i_reserved", "i_reserved", 120, 8),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v5.rs, struct RafsV5ChunkInfo (80 bytes); the
# last u32 is `reserved` there and `crc32` in later upstream versions.
CHUNK_INFO = [
    ("block_id", "block_id", 0, 32),
    ("blob_index", "blob_index", 32, 4),
    ("flags", "flags", 36, 4),
    ("compressed_size", "compressed_size", 40, 4),
    ("uncompressed_size", "uncompressed_size", 44, 4),
    ("compressed_offset", "compressed_offset", 48, 8),
    ("uncompressed_offset", "uncompressed_offset", 56, 8),
    ("file_offset", "file_offset", 64, 8),
    ("index", "index", 72, 4),
    ("crc32", "reserved", 76, 4),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v5.rs, struct RafsV5ExtBlobEntry (64 bytes,
# RAFSV5_EXT_BLOB_RESERVED_SIZE = 64 - 24); bytes 4..8 are `reserved1: [u8; 4]` there, the blob
# features in later versions.
V5_EXT_BLOB_ENTRY = [
    ("chunk_count", "chunk_count", 0, 4),
    ("features", "reserved1", 4, 4),
    ("uncompressed_size", "uncompressed_size", 8, 8),
    ("compressed_size", "compressed_size", 16, 8),
    ("reserved", "reserved2", 24, 40),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6SuperBlock (128 bytes, at
# EROFS_SUPER_OFFSET 1024); the same bytes as erofs-utils include/erofs_fs.h and Linux
# fs/erofs/erofs_fs.h struct erofs_super_block (s_u is their u1 union; extra_devices and
# devt_slotoff are the multi-device fields of Linux 5.16).
EROFS_SUPERBLOCK = [
    ("magic", "s_magic", 0, 4),
    ("checksum", "s_checksum", 4, 4),
    ("feature_compat", "s_feature_compat", 8, 4),
    ("blkszbits", "s_blkszbits", 12, 1),
    ("sb_extslots", "s_extslots", 13, 1),
    ("root_nid", "s_root_nid", 14, 2),
    ("inos", "s_inos", 16, 8),
    ("build_time", "s_build_time", 24, 8),
    ("build_time_nsec", "s_build_time_nsec", 32, 4),
    ("blocks", "s_blocks", 36, 4),
    ("meta_blkaddr", "s_meta_blkaddr", 40, 4),
    ("xattr_blkaddr", "s_xattr_blkaddr", 44, 4),
    ("uuid", "s_uuid", 48, 16),
    ("volume_name", "s_volume_name", 64, 16),
    ("feature_incompat", "s_feature_incompat", 80, 4),
    ("u", "s_u", 84, 2),
    ("extra_devices", "s_extra_devices", 86, 2),
    ("devt_slotoff", "s_devt_slotoff", 88, 2),
    ("reserved", "s_reserved", 90, 38),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6SuperBlockExt (256 bytes, at
# EROFS_SUPER_OFFSET + EROFS_SUPER_BLOCK_SIZE = 1152)
V6_SUPERBLOCK_EXT = [
    ("s_flags", "s_flags", 0, 8),
    ("s_blob_table_offset", "s_blob_table_offset", 8, 8),
    ("s_blob_table_size", "s_blob_table_size", 16, 4),
    ("s_chunk_size", "s_chunk_size", 20, 4),
    ("s_chunk_table_offset", "s_chunk_table_offset", 24, 8),
    ("s_chunk_table_size", "s_chunk_table_size", 32, 8),
    ("s_prefetch_table_offset", "s_prefetch_table_offset", 40, 8),
    ("s_prefetch_table_size", "s_prefetch_table_size", 48, 4),
    ("s_padding", "s_padding", 52, 4),
    ("s_reserved", "s_reserved", 56, 200),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6Device (128 bytes); Linux
# fs/erofs/erofs_fs.h struct erofs_deviceslot names the id `tag`.
DEVICE_SLOT = [
    ("tag", "blob_id", 0, 64),
    ("blocks", "blocks", 64, 4),
    ("mapped_blkaddr", "mapped_blkaddr", 68, 4),
    ("reserved", "reserved2", 72, 56),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6Blob (256 bytes)
V6_BLOB_ENTRY = [
    ("blob_id", "blob_id", 0, 64),
    ("blob_index", "blob_index", 64, 4),
    ("chunk_size", "chunk_size", 68, 4),
    ("chunk_count", "chunk_count", 72, 4),
    ("compression_algo", "compression_algo", 76, 4),
    ("digest_algo", "digest_algo", 80, 4),
    ("features", "features", 84, 4),
    ("compressed_size", "compressed_size", 88, 8),
    ("uncompressed_size", "uncompressed_size", 96, 8),
    ("blob_toc_size", "blob_toc_size", 104, 4),
    ("ci_compressor", "ci_compressor", 108, 4),
    ("ci_offset", "ci_offset", 112, 8),
    ("ci_compressed_size", "ci_compressed_size", 120, 8),
    ("ci_uncompressed_size", "ci_uncompressed_size", 128, 8),
    ("blob_toc_digest", "blob_toc_digest", 136, 32),
    ("blob_meta_digest", "blob_meta_digest", 168, 32),
    ("blob_meta_size", "blob_meta_size", 200, 8),
    ("cipher_iv", "cipher_iv", 208, 8),
    ("cipher_algo", "cipher_algo", 216, 4),
    ("reserved", "reserved2", 220, 36),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6InodeCompact (32 bytes) =
# erofs-utils include/erofs_fs.h struct erofs_inode_compact. Bytes 12..16 are `i_reserved`
# there; newer erofs (Linux 6.x) reads them as i_mtime, a delta to the superblock build time.
INODE_COMPACT = [
    ("i_format", "i_format", 0, 2),
    ("i_xattr_icount", "i_xattr_icount", 2, 2),
    ("i_mode", "i_mode", 4, 2),
    ("i_nlink", "i_nlink", 6, 2),
    ("i_size", "i_size", 8, 4),
    ("i_mtime_delta", "i_reserved", 12, 4),
    ("i_u", "i_u", 16, 4),
    ("i_ino", "i_ino", 20, 4),
    ("i_uid", "i_uid", 24, 2),
    ("i_gid", "i_gid", 26, 2),
    ("i_reserved", "i_reserved2", 28, 4),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6InodeExtended (64 bytes) =
# erofs-utils include/erofs_fs.h struct erofs_inode_extended (whose i_ctime/i_ctime_nsec slots
# RAFS v6 fills with the mtime).
INODE_EXTENDED = [
    ("i_format", "i_format", 0, 2),
    ("i_xattr_icount", "i_xattr_icount", 2, 2),
    ("i_mode", "i_mode", 4, 2),
    ("i_reserved", "i_reserved", 6, 2),
    ("i_size", "i_size", 8, 8),
    ("i_u", "i_u", 16, 4),
    ("i_ino", "i_ino", 20, 4),
    ("i_uid", "i_uid", 24, 4),
    ("i_gid", "i_gid", 28, 4),
    ("i_mtime", "i_mtime", 32, 8),
    ("i_mtime_nsec", "i_mtime_nsec", 40, 4),
    ("i_nlink", "i_nlink", 44, 4),
    ("i_reserved2", "i_reserved2", 48, 16),
]

# dragonflyoss/nydus rafs/src/metadata/layout/v6.rs, struct RafsV6Dirent (12 bytes, packed) =
# erofs-utils include/erofs_fs.h struct erofs_dirent
DIRENT = [
    ("nid", "e_nid", 0, 8),
    ("nameoff", "e_nameoff", 8, 2),
    ("file_type", "e_file_type", 10, 1),
    ("reserved", "e_reserved", 11, 1),
]

# erofs-utils include/erofs_fs.h struct erofs_inode_chunk_index (8 bytes); nydus v6.rs
# RafsV6InodeChunkAddr calls the same u16/u16/u32 c_blob_addr_lo, c_blob_addr_hi, c_blk_addr.
CHUNK_ADDR = [
    ("advise", "advise", 0, 2),
    ("device_id", "device_id", 2, 2),
    ("blkaddr", "blkaddr", 4, 4),
]

# erofs-utils include/erofs_fs.h struct erofs_xattr_ibody_header (12 bytes); the first u32 is
# h_reserved there, h_name_filter in Linux 6.x fs/erofs/erofs_fs.h.
XATTR_IBODY_HEADER = [
    ("h_name_filter", "h_reserved", 0, 4),
    ("h_shared_count", "h_shared_count", 4, 1),
    ("h_reserved", "h_reserved2", 5, 7),
]

# dragonflyoss/nydus storage/src/meta/mod.rs, struct BlobCompressionContextHeader (4096 bytes,
# BLOB_CCT_V2_RESERVED_SIZE = 4096 - 64)
BLOB_META_HEADER = [
    ("s_magic", "s_magic", 0, 4),
    ("s_features", "s_features", 4, 4),
    ("s_ci_compressor", "s_ci_compressor", 8, 4),
    ("s_ci_entries", "s_ci_entries", 12, 4),
    ("s_ci_offset", "s_ci_offset", 16, 8),
    ("s_ci_compressed_size", "s_ci_compressed_size", 24, 8),
    ("s_ci_uncompressed_size", "s_ci_uncompressed_size", 32, 8),
    ("s_ci_zran_offset", "s_ci_zran_offset", 40, 8),
    ("s_ci_zran_size", "s_ci_zran_size", 48, 8),
    ("s_ci_zran_count", "s_ci_zran_count", 56, 4),
    ("s_reserved", "s_reserved", 60, 4032),
    ("s_magic2", "s_magic2", 4092, 4),
]

# dragonflyoss/nydus storage/src/meta/toc.rs, struct TocEntry (128 bytes)
TOC_ENTRY = [
    ("flags", "flags", 0, 4),
    ("reserved1", "reserved1", 4, 4),
    ("name", "name", 8, 16),
    ("uncompressed_digest", "uncompressed_digest", 24, 32),
    ("compressed_offset", "compressed_offset", 56, 8),
    ("compressed_size", "compressed_size", 64, 8),
    ("uncompressed_size", "uncompressed_size", 72, 8),
    ("reserved2", "reserved2", 80, 48),
]

TABLES: dict[type[record.Record], tuple[int, list[tuple[str, str, int, int]]]] = {
    V5SuperBlock: (8192, V5_SUPERBLOCK),
    V5Inode: (128, V5_INODE),
    ChunkInfo: (80, CHUNK_INFO),
    V5ExtBlobEntry: (64, V5_EXT_BLOB_ENTRY),
    ErofsSuperBlock: (128, EROFS_SUPERBLOCK),
    V6SuperBlockExt: (256, V6_SUPERBLOCK_EXT),
    DeviceSlot: (128, DEVICE_SLOT),
    V6BlobEntry: (256, V6_BLOB_ENTRY),
    InodeCompact: (32, INODE_COMPACT),
    InodeExtended: (64, INODE_EXTENDED),
    Dirent: (12, DIRENT),
    ChunkAddr: (8, CHUNK_ADDR),
    XattrIbodyHeader: (12, XATTR_IBODY_HEADER),
    BlobMetaHeader: (4096, BLOB_META_HEADER),
    TocEntry: (128, TOC_ENTRY),
}

IDS = {cls: cls.__name__ for cls in TABLES}


def _is_bytes(cls: type[record.Record], name: str) -> bool:
    return {f.name: f.type for f in dataclasses.fields(cls)}[name] in (bytes, "bytes")


def distinct_values(cls: type[record.Record]) -> dict[str, object]:
    """A value per field that no other field of the record has, byte for byte: field k gets
    bytes that are all k+1 mixed with the low byte of its offset, so any move shows."""
    values: dict[str, object] = {}
    for k, (ours, _up, off, size) in enumerate(TABLES[cls][1]):
        raw = bytes(((k + 1) * 17 + i * 7 + off) & 0xFF or 0x5A for i in range(size))
        values[ours] = raw if _is_bytes(cls, ours) else int.from_bytes(raw, "little")
    return values


def test_every_record_of_the_format_package_has_a_table():
    found = {obj for mod in (v5, v6, blob, layer, record)
             for obj in vars(mod).values()
             if inspect.isclass(obj) and issubclass(obj, record.Record) and obj is not record.Record}
    assert found == set(TABLES)


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_upstream_table_covers_every_byte_once(cls):
    size, table = TABLES[cls]
    pos = 0
    for _ours, upstream, off, width in table:
        assert off == pos, f"{upstream}: table has offset {off}, previous field ends at {pos}"
        pos += width
    assert pos == size == cls.SIZE


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_field_names_and_order_match_the_table(cls):
    assert [f.name for f in dataclasses.fields(cls)] == [row[0] for row in TABLES[cls][1]]


def misplaced_fields(cls: type[record.Record], table_of: type[record.Record]) -> list[str]:
    """Fields of `cls` that a record with a distinct value in every field does not encode at
    the offset the upstream table of `table_of` gives."""
    values = distinct_values(table_of)
    raw = cls(**values).encode()
    out = []
    for ours, upstream, off, size in TABLES[table_of][1]:
        v = values[ours]
        want = v if isinstance(v, bytes) else v.to_bytes(size, "little")
        if raw[off:off + size] != want:
            out.append(f"{cls.__name__}.{ours} ({upstream}) not at {off}..{off + size}")
    return out


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_encode_puts_each_field_at_its_upstream_offset(cls):
    assert len(cls(**distinct_values(cls)).encode()) == TABLES[cls][0]
    assert misplaced_fields(cls, cls) == []


def swapped(cls: type[record.Record], i: int) -> type[record.Record]:
    """`cls` with fields i and i+1 swapped, in the declaration and in the struct format alike
    (a valid record of the same size: the mistake a typo in a record definition makes)."""
    fields = [(f.name, f.type) for f in dataclasses.fields(cls)]
    codes: list[str] = []
    for count, code in record._CODE.findall(cls.FORMAT[1:]):
        codes.extend([f"{count or 1}s"] if code == "s" else [code] * int(count or 1))
    fields[i], fields[i + 1] = fields[i + 1], fields[i]
    codes[i], codes[i + 1] = codes[i + 1], codes[i]
    body = {"__annotations__": dict(fields), "__module__": __name__, "STRUCTURE": cls.STRUCTURE,
            "SIZE": cls.SIZE, "FORMAT": "<" + "".join(codes)}
    return record.record(type(f"{cls.__name__}Swap{i}", (record.Record,), body))


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_every_swap_of_two_neighbouring_fields_is_caught(cls):
    """Any record with any two neighbouring fields swapped fails the check above (without
    fixtures): so does any other reordering, which is a series of such swaps."""
    for i in range(len(TABLES[cls][1]) - 1):
        assert misplaced_fields(swapped(cls, i), cls), f"{cls.__name__}: swapping field {i} and {i + 1}"


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_decode_reads_each_field_from_its_upstream_offset(cls):
    size, table = TABLES[cls]
    values = distinct_values(cls)
    buf = bytearray(size)
    for ours, _up, off, width in table:
        v = values[ours]
        buf[off:off + width] = v if isinstance(v, bytes) else v.to_bytes(width, "little")
    rec = cls.decode(bytes(buf))
    for ours, upstream, _off, _w in table:
        assert getattr(rec, ours) == values[ours], f"{cls.__name__}.{ours} ({upstream})"


@pytest.mark.parametrize("cls", TABLES, ids=IDS.get)
def test_format_errors_name_the_upstream_offset(cls):
    """The offset a short-buffer error reports for a field is the table's offset."""
    _size, table = TABLES[cls]
    for ours, _up, off, _w in table:
        assert cls.field_offset(ours) == off


# --- constants and bit layouts, from the same upstream files -------------------------------

def test_magics_and_fixed_positions():
    # nydus v5.rs: RAFSV5_SUPER_MAGIC 0x5241_4653, RAFS_SUPER_VERSION_V5 0x500,
    # RAFSV5_SUPERBLOCK_SIZE 8192, RAFSV5_ALIGNMENT 8
    assert (v5.RAFS_V5_MAGIC, v5.RAFS_V5_VERSION, v5.SUPERBLOCK_SIZE, v5.ALIGNMENT) == (
        0x5241_4653, 0x500, 8192, 8)
    # nydus v6.rs: EROFS_SUPER_MAGIC_V1 0xE0F5_E1E2, EROFS_SUPER_OFFSET 1024, the extended
    # superblock after the 128-byte superblock, EROFS_DEVTABLE_OFFSET = 1024 + 128 + 256
    assert (v6.EROFS_MAGIC, v6.SUPERBLOCK_OFFSET, v6.EXT_SUPERBLOCK_OFFSET, v6.DEVICE_TABLE_OFFSET) == (
        0xE0F5_E1E2, 1024, 1152, 1408)
    # nydus v6.rs: EROFS_FEATURE_COMPAT_RAFS_V6 0x4000_0000, INCOMPAT_CHUNKED_FILE 4,
    # INCOMPAT_DEVICE_TABLE 8, EROFS_CHUNK_FORMAT_INDEXES_FLAG 0x20, SIZE_MASK 0x1F
    assert (v6.FEATURE_COMPAT_RAFS_V6, v6.FEATURE_INCOMPAT_CHUNKED_FILE,
            v6.FEATURE_INCOMPAT_DEVICE_TABLE) == (0x4000_0000, 4, 8)
    assert (v6.CHUNK_FORMAT_INDEXES, v6.CHUNK_FORMAT_BLKBITS_MASK) == (0x20, 0x1F)
    # erofs_fs.h: EROFS_INODE_FLAT_PLAIN 0, FLAT_INLINE 2, CHUNK_BASED 4 (shifted left by 1 in
    # i_format); file types EROFS_FT_UNKNOWN..EROFS_FT_SYMLINK = 0..7
    assert (v6.LAYOUT_FLAT_PLAIN, v6.LAYOUT_FLAT_INLINE, v6.LAYOUT_CHUNK_BASED) == (0, 2, 4)
    assert (v6.FT_UNKNOWN, v6.FT_REG, v6.FT_DIR, v6.FT_CHR, v6.FT_BLK, v6.FT_FIFO, v6.FT_SOCK,
            v6.FT_SYMLINK) == tuple(range(8))
    # erofs_fs.h: EROFS_XATTR_INDEX_USER 1, POSIX_ACL_ACCESS 2, POSIX_ACL_DEFAULT 3, TRUSTED 4,
    # SECURITY 6
    assert v6.XATTR_PREFIXES == {1: b"user.", 2: b"system.posix_acl_access",
                                 3: b"system.posix_acl_default", 4: b"trusted.", 6: b"security."}
    # nydus storage/src/meta/mod.rs: BLOB_CCT_MAGIC 0xb10bb10b, BLOB_CCT_HEADER_SIZE 0x1000
    assert (blob.BLOB_META_MAGIC, blob.BLOB_META_HEADER_SIZE) == (0xB10B_B10B, 0x1000)
    # nydus storage/src/meta/toc.rs: TocEntryFlags COMPRESSION_NONE 1, ZSTD 2, LZ4_BLOCK 4
    assert blob.TOC_FLAGS == {"none": 0x1, "zstd": 0x2, "lz4_block": 0x4}


def test_chunk_index_packs_blob_index_and_ci_index_as_upstream():
    # nydus v6.rs RafsV6InodeChunkAddr: c_blob_addr_hi low byte = blob index + 1 (device 0 is
    # the bootstrap), high byte = ci index bits 16..23; c_blob_addr_lo = ci index bits 0..15
    a = ChunkAddr.make(blob_index=2, ci_index=0x12_3456, blkaddr=0x789)
    assert a.encode() == struct.pack("<HHI", 0x3456, 0x12 << 8 | 3, 0x789)
    assert (a.blob_index, a.ci_index) == (2, 0x12_3456)


def test_ci_v1_entries_decode_to_upstreams_own_answers():
    # nydus storage/src/meta/chunk_info_v1.rs, its unit tests test_new_chunk_on_disk ("old
    # format compatibility") and test_get_chunks: (uncomp_info, comp_info) -> (compressed
    # offset, compressed size, uncompressed offset, uncompressed size)
    cases = [
        ((0xFFFF_FFFF_F100_0000, 0xFFFF_F0FF_FFFF_FFFF),
         (0x00FF_FFFF_FFFF, 0x000F_FFFF + 1, 0xFFFF_1000 * 0x1000, 0x000F_FFFF + 1)),
        ((0x0100_0000_0000_0000, 0x00FF_F000_0000_0000), (0, 0x1000, 0, 0x1001)),
        ((0x01FF_F000_0000_2000, 0x01FF_F000_0000_1000), (0x1000, 0x2000, 0x2000, 0x2000)),
        ((0x01FF_F000_0010_2000, 0x00FF_F000_0000_5000), (0x5000, 0x1000, 0x10_2000, 0x2000)),
    ]
    for (uncomp_info, comp_info), want in cases:
        raw = struct.pack("<QQ", uncomp_info, comp_info)
        assert blob.decode_ci_v1(raw, 0) == want
    # and the encoder writes the last two exactly (no stray bits elsewhere)
    for (uncomp_info, comp_info), want in cases[2:]:
        assert blob.encode_ci_v1(*want) == struct.pack("<QQ", uncomp_info, comp_info)


# --- variable-length tables, byte for byte as the upstream writers lay them out ---------------

def test_v5_blob_table_layout():
    # nydus v5.rs RafsV5BlobTable::store: per entry u32 readahead_offset, u32 readahead_size, the
    # blob id bytes; a NUL between entries (not after the last); zero padding to 8 bytes
    entries = [(1, 2, b"aa"), (3, 4, b"bbb")]
    want = (struct.pack("<II", 1, 2) + b"aa" + b"\0" + struct.pack("<II", 3, 4) + b"bbb")
    want += bytes(-len(want) % 8)
    assert v5.encode_blob_table(entries) == want
    assert v5.decode_blob_table(want, 0, len(want)) == entries


def test_v5_xattr_table_layout():
    # nydus v5.rs RafsXAttrs::store_v5: u64 size of the pairs, then per pair u32 pair size
    # (name + 1 + value), the name, a NUL, the value; zero padding to 8 bytes
    pairs = [(b"user.a", b"xy"), (b"trusted.b", b"")]
    body = (struct.pack("<I", 6 + 1 + 2) + b"user.a\0xy" + struct.pack("<I", 9 + 1) + b"trusted.b\0")
    want = struct.pack("<Q", len(body)) + body + bytes(-len(body) % 8)
    assert v5.encode_xattrs(pairs) == want
    assert v5.decode_xattrs(want, 0) == (pairs, len(want))


def test_v6_inline_xattr_layout():
    # erofs_fs.h: a 12-byte erofs_xattr_ibody_header, then per entry e_name_len (u8),
    # e_name_index (u8), e_value_size (le16), the name suffix, the value, padded to 4 bytes;
    # i_xattr_icount = 1 + (area - 12) / 4
    pairs = [(b"user.k", b"v"), (b"security.capability", b"\x01\x02\x03"),
             (b"system.posix_acl_access", b"\x02\x00")]
    e1 = bytes([1, 1]) + struct.pack("<H", 1) + b"k" + b"v" + bytes(2)
    e2 = bytes([10, 6]) + struct.pack("<H", 3) + b"capability" + b"\x01\x02\x03" + bytes(3)
    e3 = bytes([0, 2]) + struct.pack("<H", 2) + b"\x02\x00" + bytes(2)
    want = bytes(12) + e1 + e2 + e3
    area = v6.encode_xattrs(pairs)
    assert area == want
    assert v6.xattr_icount(area) == 1 + (len(want) - 12) // 4
    assert v6.decode_xattrs(area, 0, v6.xattr_icount(area)) == pairs


def test_v6_directory_block_layout():
    # erofs_fs.h: a block of erofs_dirent (nid le64, nameoff le16, file_type u8, reserved u8)
    # sorted by name, then the names back to back; nameoff of entry 0 = 12 * count
    block = v6.encode_dir_blocks([(b".", 36, 2), (b"..", 36, 2), (b"f", 40, 1)], 4096)[0]
    want = (struct.pack("<QHBB", 36, 36, 2, 0) + struct.pack("<QHBB", 36, 37, 2, 0)
            + struct.pack("<QHBB", 40, 39, 1, 0) + b"..." + b"f")
    assert block == want
