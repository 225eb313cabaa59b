"""Write a Tree as a RAFS v5 bootstrap (rafs-v5.md §10, writer checklist).

Choices: records in index order (as the builder that made the upstream fixtures); HARDLINK flag
on every name of a link group; rdev only for char/block devices; xattrs sorted by name; the
root keeps its own mtime; the extended blob table is always written.
"""

from __future__ import annotations

import array
import functools
import stat
import sys

from ..format import v5
from ..format.blob import digest
from ..format.flags import COMPRESSOR_FLAG, DIGESTER_FLAG, InodeFlagsV5, SuperFlags
from ..format.record import align, encode_u32_array
from ..format.v5 import V5ExtBlobEntry, V5Inode, V5SuperBlock
from ..reader.model import MARK_IMPLICIT_DIR, encode_mark
from ..tree.node import Tree
from ..tree.numbering import Entry, number_entries, resolve_paths
from . import limits


def superblock_flags(tree: Tree, has_xattr: bool) -> int:
    flags = COMPRESSOR_FLAG[tree.compressor] | DIGESTER_FLAG[tree.digester] | tree.extra_flags
    if tree.explicit_uid_gid:
        flags |= SuperFlags.EXPLICIT_UID_GID
    if has_xattr:
        flags |= SuperFlags.HAS_XATTR
    return int(flags)


def write_v5(tree: Tree) -> tuple[bytearray, list[bytes]]:
    """Bootstrap bytes (a bytearray, as write_v6), and the prefetch paths that matched no entry."""
    entries = number_entries(tree.root)
    prefetch, missing = resolve_paths(entries, tree.prefetch)
    digests = _digests(entries, tree.digester)

    n = len(entries)
    inode_table_size = align(4 * n, 8)
    prefetch_inos = [e.ino for e in prefetch]
    prefetch_size = align(4 * len(prefetch_inos), 8)
    for b in tree.blobs:
        limits.check(f"blob {b.blob_id}", "RAFS v5 blob table", "readahead_offset",
                     b.readahead_offset, limits.U32_MAX)
        limits.check(f"blob {b.blob_id}", "RAFS v5 blob table", "readahead_size",
                     b.readahead_size, limits.U32_MAX)
    blob_table = v5.encode_blob_table([(b.readahead_offset, b.readahead_size, b.blob_id.encode())
                                       for b in tree.blobs])
    ext_table = b"".join(limits.encode(V5ExtBlobEntry(b.chunk_count, b.features, b.uncompressed_size,
                                                      b.compressed_size, bytes(40)), f"blob {b.blob_id}")
                         for b in tree.blobs)
    inode_table_off = v5.SUPERBLOCK_SIZE
    prefetch_off = inode_table_off + inode_table_size
    blob_off = prefetch_off + prefetch_size
    ext_off = blob_off + len(blob_table)
    pos = ext_off + len(ext_table)

    # the records are appended to the output as they are made (a million entries must not be
    # a million bytes objects first); the tables before them are filled in at the end
    out = bytearray(pos)
    slots = array.array("I")
    has_xattr = False
    for e in entries:
        rec = _record(e, digests[e.owner.index])
        has_xattr |= bool(e.node.xattrs)
        limits.check("bootstrap", "RAFS v5 inode table", "offset", pos >> 3, limits.U32_MAX)
        slots.append(pos >> 3)
        out += rec
        pos += len(rec)
    del digests

    sb = V5SuperBlock(
        s_magic=v5.RAFS_V5_MAGIC, s_fs_version=v5.RAFS_V5_VERSION, s_sb_size=v5.SUPERBLOCK_SIZE,
        s_block_size=tree.chunk_size, s_flags=superblock_flags(tree, has_xattr),
        s_inodes_count=sum(1 for e in entries if e.first is None),
        s_inode_table_offset=inode_table_off, s_prefetch_table_offset=prefetch_off,
        s_blob_table_offset=blob_off, s_inode_table_entries=n,
        s_prefetch_table_entries=len(prefetch_inos), s_blob_table_size=len(blob_table),
        s_extended_blob_table_entries=len(tree.blobs), s_extended_blob_table_offset=ext_off,
        s_reserved=bytes(8112))
    limits.check("bootstrap", "RAFS v5 inode table", "offset", pos >> 3, limits.U32_MAX)
    if slots.itemsize != 4 or sys.byteorder != "little":
        raise AssertionError("the inode table is written as little-endian u32")
    head = b"".join([limits.encode(sb, "bootstrap"), slots.tobytes(), bytes(inode_table_size - 4 * n),
                     encode_u32_array(prefetch_inos, 8), blob_table, ext_table])
    assert len(head) == ext_off + len(ext_table)
    out[:len(head)] = head
    return out, missing


def _digests(entries: list[Entry], algo: str) -> list[bytes]:
    """Inode digests by entry index, bottom-up (children always have higher indexes than their
    parent)."""
    out: list[bytes] = [b""] * (len(entries) + 1)
    # non-directories first: a later hard-link name can sit in a directory numbered before
    # the name that owns the inode; then directories bottom-up (children number higher)
    owners = [e for e in reversed(entries) if e.first is None]
    for e in sorted(owners, key=lambda e: e.node.is_dir):
        node = e.node
        if node.is_dir:
            kids = entries[e.child_index - 1:e.child_index - 1 + e.child_count]
            data = b"".join(out[k.owner.index] for k in kids)
        elif node.is_reg:
            data = b"".join(c.block_id for c in node.chunks)
        elif node.is_symlink:
            data = node.symlink or b""
        else:
            data = b""
        out[e.index] = digest(data, algo)
    return out


def _record(e: Entry, inode_digest: bytes) -> bytes:
    node = e.node
    pairs = sorted(node.xattrs.items())
    flags = 0
    symlink = b""
    child_index = child_count = 0
    if node.is_dir:
        size = v5.dir_size(list((node.children or {}).keys()))
        child_index, child_count = e.child_index, e.child_count
    elif node.is_symlink:
        symlink = node.symlink or b""
        size = len(symlink)
        flags |= InodeFlagsV5.SYMLINK
    elif node.is_reg:
        size = node.size
        child_count = len(node.chunks)
    else:
        size = 0
    if not node.is_dir and e.nlink > 1:
        flags |= InodeFlagsV5.HARDLINK
    if pairs:
        flags |= InodeFlagsV5.XATTR
    mode = node.mode
    rdev = limits.disk_rdev(node.rdev, lambda: limits.entry_path(e), "RAFS v5 inode") \
        if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
    rec = V5Inode(
        i_digest=inode_digest, i_parent=e.parent.ino if e.parent else 0, i_ino=e.ino,
        i_uid=node.uid, i_gid=node.gid, i_projid=0, i_mode=mode, i_size=size,
        i_blocks=v5.inode_blocks(size, pairs), i_flags=int(flags), i_nlink=e.nlink,
        i_child_index=child_index, i_child_count=child_count, i_name_size=len(e.name),
        i_symlink_size=len(symlink), i_rdev=rdev, i_mtime_nsec=node.mtime_nsec,
        i_mtime=node.mtime, i_reserved=encode_mark(MARK_IMPLICIT_DIR if node.implicit else 0, 8))
    where = functools.partial(limits.entry_path, e)
    limits.check(where, "RAFS v5 inode", "name length", len(e.name), v5.MAX_NAME)
    parts = [limits.encode(rec, where), _pad8(e.name)]
    if symlink:
        parts.append(_pad8(symlink))
    if pairs:
        parts.append(v5.encode_xattrs(pairs))
    if node.is_reg:
        parts.extend(limits.encode(c, where) for c in node.chunks)
    return b"".join(parts)


def _pad8(raw: bytes) -> bytes:
    return raw + bytes(align(len(raw), 8) - len(raw))
