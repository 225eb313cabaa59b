"""Write a Tree as a RAFS v6 (EROFS) bootstrap (rafs-v6.md §11, writer checklist).

Choices: every inode extended (exact mtimes under nydusd and the kernel, rdev kept); xattrs
sorted by name; inodes allocated in upstream's order (a directory, its non-directory children,
then its subdirectories depth-first), each inode with its xattrs and inline tail inside one
block; full directory/symlink blocks in a data area after all inodes; chunk table sorted by
(digest, blob) at the 4 KiB-aligned end; the first 4 KiB of the meta area left unused so the
root nid is 128 as in upstream images.
"""

from __future__ import annotations

import array
import functools
import stat

from ..errors import FieldRangeError
from ..format import v6
from ..format.blob import COMPRESSOR_IDS, DIGESTER_IDS
from ..format.record import align, encode_u32_array
from ..format.v5 import ChunkInfo
from ..format.v6 import (ChunkAddr, DeviceSlot, ErofsSuperBlock, InodeExtended, V6BlobEntry,
                         V6SuperBlockExt)
from ..reader.model import MARK_IMPLICIT_DIR, encode_mark
from ..tree.node import BlobDesc, Node, Tree
from ..tree.numbering import Entry, number_entries, resolve_paths
from . import limits
from .bootstrap_v5 import superblock_flags

BS = v6.BLOCK_SIZE
BLKSZBITS = 12


class _Placement:
    """Where each inode goes, kept per entry index in arrays: a million entries must not cost
    a Python object each (docs/limits.md). Only inodes that need more than an offset (xattrs,
    directory and symlink data) have dict entries."""

    def __init__(self, count: int, meta_start: int) -> None:
        self.meta_start = meta_start
        self.offset = array.array("Q", bytes(8 * (count + 1)))   # by entry index
        self.xattr: dict[int, bytes] = {}                        # non-empty xattr areas
        self.data: dict[int, tuple[int, bool, int]] = {}         # dirs, symlinks: size, inline, block

    def nid(self, index: int) -> int:
        return (self.offset[index] - self.meta_start) // v6.INODE_SLOT


def _xattr_area(e: Entry) -> bytes:
    """The inline xattr area, refusing names and values an EROFS entry cannot hold (a RAFS v5
    source may carry any name)."""
    pairs = sorted(e.node.xattrs.items())
    where = functools.partial(limits.entry_path, e)
    for name, value in pairs:
        try:
            _index, suffix = v6.split_xattr_name(name)
        except ValueError:
            raise FieldRangeError(where(), "EROFS xattr entry", "name", name,
                                  "RAFS v6 keeps user., trusted., security. and POSIX ACLs") from None
        limits.check(where, "EROFS xattr entry", "e_name_len", len(suffix), 0xFF)
        limits.check(where, "EROFS xattr entry", "e_value_size", len(value), limits.XATTR_VALUE_MAX)
    return v6.encode_xattrs(pairs)


def _dir_entries(place: _Placement, e: Entry, entries: list[Entry]) -> list[tuple[bytes, int, int]]:
    self_nid = place.nid(e.index)
    parent_nid = place.nid(e.parent.index) if e.parent else self_nid
    out = [(b".", self_nid, v6.FT_DIR), (b"..", parent_nid, v6.FT_DIR)]
    for k in entries[e.child_index - 1:e.child_index - 1 + e.child_count]:
        out.append((k.name, place.nid(k.owner.index), v6.file_type_of(k.node.mode)))
    out.sort(key=lambda t: t[0])
    return out


def _dir_size(e: Entry, entries: list[Entry]) -> int:
    """Size of the dirent blocks; depends on names only, so it is known before nids."""
    names = [b".", b".."] + [k.name for k in entries[e.child_index - 1:e.child_index - 1 + e.child_count]]
    names.sort()
    full = used = 0
    for n in names:  # the packing rule of v6.encode_dir_blocks, without encoding
        need = v6.DIRENT_SIZE + len(n)
        if used and used + need > BS:
            full += 1
            used = 0
        used += need
    return full * BS + used


def _allocation_order(entries: list[Entry]) -> list[Entry]:
    order: list[Entry] = []
    stack = [entries[0]]
    while stack:
        d = stack.pop()
        order.append(d)
        kids = entries[d.child_index - 1:d.child_index - 1 + d.child_count]
        order.extend(k for k in kids if not k.node.is_dir and k.first is None)
        stack.extend(reversed([k for k in kids if k.node.is_dir]))
    return order


def _chunk_size_of(node: Node, chunk_size: int) -> int:
    """Upstream's per-file chunk size: one logical chunk when the chunks are contiguous."""
    chunks = node.chunks
    if node.size <= chunk_size or len(chunks) < 2:
        return chunk_size
    for a, b in zip(chunks, chunks[1:], strict=False):
        if a.blob_index != b.blob_index or a.uncompressed_offset + chunk_size != b.uncompressed_offset:
            return chunk_size
    return 1 << (node.size - 1).bit_length()


def write_v6(tree: Tree) -> tuple[bytearray, list[bytes]]:
    """Bootstrap bytes (a bytearray: copying them to bytes would double them), and the prefetch
    paths that matched no entry."""
    entries = number_entries(tree.root)
    prefetch, missing = resolve_paths(entries, tree.prefetch)
    nblobs = len(tree.blobs)
    limits.check("bootstrap", "RAFS v6 blob table", "blob count", nblobs, limits.V6_BLOB_INDEX_MAX + 1)
    for e in entries:
        limits.check(functools.partial(limits.entry_path, e), "EROFS dirent", "name length", len(e.name), 255)

    blob_table_off = align(v6.DEVICE_TABLE_OFFSET + v6.DEVICE_SLOT_SIZE * nblobs, BS)
    prefetch_off = blob_table_off + v6.BLOB_ENTRY_SIZE * nblobs
    meta_start = align(prefetch_off + 4 * len(prefetch), BS)

    # pass 1: sizes and placement of the inodes, then of the directory and symlink blocks
    order = _allocation_order(entries)
    place = _Placement(len(entries), meta_start)
    cursor = meta_start + BS
    for e in order:
        node = e.node
        xattr = _xattr_area(e)
        if xattr:
            place.xattr[e.index] = xattr
        base = v6.EXTENDED_SIZE + len(xattr)
        if node.is_dir or node.is_symlink:
            size = _dir_size(e, entries) if node.is_dir else len(node.symlink or b"")
            tail = size % BS
            inline = tail != 0 and base + tail <= BS
            place.data[e.index] = (size, inline, 0)
            unit = base + (tail if inline else 0)
        elif node.is_reg:
            unit = align(base, 8) + v6.CHUNK_ADDR_SIZE * len(node.chunks)
        else:
            unit = base
        head = min(unit, BS) if not node.is_reg else min(base, BS)
        if cursor % BS + head > BS:   # keep the inode, its xattrs and inline tail in one block
            cursor = align(cursor, BS)
        place.offset[e.index] = cursor
        cursor = align(cursor + unit, v6.INODE_SLOT)
    data_cursor = align(cursor, BS)
    for index, (size, inline, _block) in place.data.items():   # allocation order
        full = size // BS if inline else (size + BS - 1) // BS
        place.data[index] = (size, inline, data_cursor // BS)
        data_cursor += full * BS
    meta_end = data_cursor

    chunk_table = _chunk_table(order)
    chunk_table_off = align(meta_end, BS) if chunk_table else 0
    total = align(chunk_table_off + len(chunk_table), BS) if chunk_table else align(meta_end, BS)

    # pass 2: every inode, and its blocks (dirents now that nids are known), written in place
    out = bytearray(total)
    for e in order:
        node = e.node
        data = b""
        if node.is_dir:
            data = b"".join(v6.encode_dir_blocks(_dir_entries(place, e, entries), BS))
        elif node.is_symlink:
            data = node.symlink or b""
        rec, inline_tail = _inode(place, e, tree, data)
        where = functools.partial(limits.entry_path, e)
        raw = limits.encode(rec, where) + place.xattr.get(e.index, b"")
        if node.is_reg:
            raw = raw + bytes(align(len(raw), 8) - len(raw)) + \
                b"".join(limits.encode(_chunk_addr(c, e), where) for c in node.chunks)
        else:
            raw += inline_tail
        off = place.offset[e.index]
        out[off:off + len(raw)] = raw
        if e.index in place.data:
            size, inline, block = place.data[e.index]
            blocks = data[:(size // BS if inline else (size + BS - 1) // BS) * BS]
            out[block * BS:block * BS + len(blocks)] = blocks    # a short last block stays zero-padded
    chunk_table_size = len(chunk_table)
    if chunk_table:
        out[chunk_table_off:chunk_table_off + chunk_table_size] = chunk_table
    del chunk_table
    has_xattr = bool(place.xattr)

    flags = superblock_flags(tree, has_xattr)
    devices, mapped = [], align(total, v6.V6_BLOCK_SEG_ALIGNMENT) // BS
    for b in tree.blobs:
        nblocks = b.uncompressed_size // BS
        devices.append(DeviceSlot(_blob_id_field(b.blob_id), nblocks, mapped, bytes(56)))
        mapped = align((mapped + nblocks) * BS, v6.V6_BLOCK_SEG_ALIGNMENT) // BS
    sb = ErofsSuperBlock(
        magic=v6.EROFS_MAGIC, checksum=0, feature_compat=v6.FEATURE_COMPAT_RAFS_V6,
        blkszbits=BLKSZBITS, sb_extslots=0, root_nid=place.nid(1), inos=len(entries), build_time=0,
        build_time_nsec=0, blocks=sum(b.uncompressed_size // BS for b in tree.blobs),
        meta_blkaddr=meta_start // BS, xattr_blkaddr=0, uuid=bytes(16), volume_name=bytes(16),
        feature_incompat=v6.FEATURE_INCOMPAT_RAFS_V6, u=0, extra_devices=nblobs,
        devt_slotoff=v6.DEVT_SLOTOFF, reserved=bytes(38))
    ext = V6SuperBlockExt(
        s_flags=flags, s_blob_table_offset=blob_table_off,
        s_blob_table_size=v6.BLOB_ENTRY_SIZE * nblobs, s_chunk_size=tree.chunk_size,
        s_chunk_table_offset=chunk_table_off, s_chunk_table_size=chunk_table_size,
        s_prefetch_table_offset=prefetch_off if prefetch else 0,
        s_prefetch_table_size=4 * len(prefetch), s_padding=0, s_reserved=bytes(200))
    out[v6.SUPERBLOCK_OFFSET:v6.SUPERBLOCK_OFFSET + 128] = limits.encode(sb, "bootstrap")
    out[v6.EXT_SUPERBLOCK_OFFSET:v6.EXT_SUPERBLOCK_OFFSET + 256] = limits.encode(ext, "bootstrap")
    for i, (d, b) in enumerate(zip(devices, tree.blobs, strict=True)):
        off = v6.DEVICE_TABLE_OFFSET + 128 * i
        out[off:off + 128] = limits.encode(d, f"blob {b.blob_id}")
    for i, b in enumerate(tree.blobs):
        off = blob_table_off + 256 * i
        out[off:off + 256] = limits.encode(_blob_entry(i, b), f"blob {b.blob_id}")
    if prefetch:
        raw = encode_u32_array([place.nid(e.owner.index) for e in prefetch])
        out[prefetch_off:prefetch_off + len(raw)] = raw
    return out, missing


def _inode(place: _Placement, e: Entry, tree: Tree, data: bytes) -> tuple[InodeExtended, bytes]:
    """The inode record of entry `e` and, for an inline directory or symlink, its tail."""
    node = e.node
    mode = node.mode
    tail = b""
    if node.is_dir or node.is_symlink:
        size, inline, i_u = place.data[e.index]
        assert size == len(data)
        layout = v6.LAYOUT_FLAT_INLINE if inline else v6.LAYOUT_FLAT_PLAIN
        if inline:
            tail = data[(size // BS) * BS:]
    elif node.is_reg:
        size = node.size
        layout = v6.LAYOUT_CHUNK_BASED
        i_u = v6.chunk_format(_chunk_size_of(node, tree.chunk_size), BLKSZBITS)
    else:
        size = 0
        layout = v6.LAYOUT_FLAT_PLAIN
        i_u = limits.disk_rdev(node.rdev, lambda: limits.entry_path(e), "EROFS extended inode") \
            if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
    rec = InodeExtended(
        i_format=1 | (layout << 1), i_xattr_icount=v6.xattr_icount(place.xattr.get(e.index, b"")), i_mode=mode,
        i_reserved=0, i_size=size, i_u=i_u, i_ino=e.ino, i_uid=node.uid, i_gid=node.gid,
        i_mtime=node.mtime, i_mtime_nsec=node.mtime_nsec, i_nlink=e.nlink,
        i_reserved2=encode_mark(MARK_IMPLICIT_DIR if node.implicit else 0, 16))
    return rec, tail


def _chunk_addr(c: ChunkInfo, e: Entry) -> ChunkAddr:
    """The v6 chunk index of a chunk; its packed fields are checked here because `make` masks
    them (a chunk index past 24 bits would silently point at another chunk)."""
    where = functools.partial(limits.entry_path, e)
    limits.check(where, "RAFS v6 chunk index", "chunk index", c.index, limits.V6_CHUNK_INDEX_MAX)
    limits.check(where, "RAFS v6 chunk index", "blob index", c.blob_index, limits.V6_BLOB_INDEX_MAX)
    limits.check(where, "RAFS v6 chunk index", "blkaddr (uncompressed offset / 4096)",
                 c.uncompressed_offset // BS, limits.U32_MAX)
    return ChunkAddr.make(c.blob_index, c.index, c.uncompressed_offset // BS)


def _chunk_table(order: list[Entry]) -> bytearray:
    """Distinct chunks sorted by (digest, blob_index + 1), upstream's key; keyed by
    (blob, index) so that no chunk an index points at is ever left out. Encoded into one
    buffer: a bytes object per chunk would cost more than the table."""
    seen: dict[int, ChunkInfo] = {}
    for e in order:
        for c in e.node.chunks:
            # (blob, index) as one int (a tuple per chunk costs 64 bytes): chunk indexes are
            # u32 fields, so a shift of 40 keeps every pair apart
            seen.setdefault((c.blob_index << 40) | c.index, c)
    ordered = sorted(seen.values(), key=lambda c: (c.block_id, c.blob_index + 1, c.index))
    del seen
    out = bytearray()
    for c in ordered:
        out += limits.encode(c, f"chunk {c.index} of blob {c.blob_index}")
    return out


def _blob_id_field(blob_id: str) -> bytes:
    raw = blob_id.encode()
    limits.check(f"blob {blob_id}", "RAFS v6 blob table entry", "blob_id length", len(raw), 64)
    return raw.ljust(64, b"\0")


def _blob_entry(index: int, b: BlobDesc) -> V6BlobEntry:
    return V6BlobEntry(
        blob_id=_blob_id_field(b.blob_id), blob_index=index, chunk_size=b.chunk_size,
        chunk_count=b.chunk_count, compression_algo=COMPRESSOR_IDS[b.compressor],
        digest_algo=DIGESTER_IDS[b.digester], features=b.features,
        compressed_size=b.compressed_size, uncompressed_size=b.uncompressed_size,
        blob_toc_size=b.blob_toc_size, ci_compressor=b.ci_compressor, ci_offset=b.ci_offset,
        ci_compressed_size=b.ci_compressed_size, ci_uncompressed_size=b.ci_uncompressed_size,
        blob_toc_digest=b.blob_toc_digest, blob_meta_digest=b.blob_meta_digest,
        blob_meta_size=b.blob_meta_size, cipher_iv=bytes(8), cipher_algo=0, reserved=bytes(36))
