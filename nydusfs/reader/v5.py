"""Lazy reader of RAFS v5 bootstraps: decodes an inode record only when asked."""

from __future__ import annotations

import stat
import struct
from typing import Iterator, cast

from ..errors import FormatError, NotFoundError
from ..format import v5
from ..format.flags import (KNOWN_SUPER_FLAGS, BlobFeatures, InodeFlagsV5, compressor_of,
                            digester_of)
from ..format.blob import MAX_CHUNK_SIZE, valid_chunk_size
from ..format.record import Record, align, encode_u32_array, u32_array
from ..format.v5 import ChunkInfo, V5ExtBlobEntry, V5Inode, V5SuperBlock
from .base import Image, names_file
from .model import (MARK_IMPLICIT_DIR, BlobInfo, Inode, Region, decode_mark, dev_from_disk, make_inode,
                    stem_owners)

MAX_TABLE_VALUE = 1 << 29
_XATTR = int(InodeFlagsV5.XATTR)  # a plain int: IntFlag arithmetic is slow per inode


class ImageV5(Image):
    version = 5

    def _open(self, stem: str) -> None:
        buf = self.buf
        sb = self.sb = V5SuperBlock.decode(buf, 0)
        self._check_superblock(sb, len(buf))
        self.flags = sb.s_flags
        self.chunk_size = sb.s_block_size
        self.compressor = compressor_of(sb.s_flags)
        self.digester = digester_of(sb.s_flags)
        self.root_ino = v5.ROOT_INO
        self.inode_count = sb.s_inodes_count
        self.entries = sb.s_inode_table_entries
        self.prefetch = list(u32_array(buf, sb.s_prefetch_table_offset, sb.s_prefetch_table_entries,
                                       "RAFS v5 prefetch table"))
        raw_blobs = v5.decode_blob_table(buf, sb.s_blob_table_offset, sb.s_blob_table_size)
        ext = []
        for i in range(sb.s_extended_blob_table_entries):
            ext.append(V5ExtBlobEntry.decode(buf, sb.s_extended_blob_table_offset + i * 64))
        self.ext_blob_entries = ext
        self.raw_blob_entries = raw_blobs
        self.blobs = []
        texts = [raw_id.decode("utf-8", "surrogateescape") for _, _, raw_id in raw_blobs]
        flags = [ext[i].features if i < len(ext) else BlobFeatures.V5_NO_EXT_BLOB_TABLE
                 for i in range(len(raw_blobs))]
        stemmed = stem_owners(list(zip(texts, flags, strict=True)), stem)
        for i, (ra_off, ra_size, _raw_id) in enumerate(raw_blobs):
            e = ext[i] if i < len(ext) else None
            features = flags[i]
            text_id = texts[i]
            blob_id = stem if i in stemmed else text_id
            self.blobs.append(BlobInfo(
                index=i, blob_id=blob_id, raw_id=text_id, compressor=self.compressor,
                digester=self.digester, chunk_size=self.chunk_size,
                chunk_count=e.chunk_count if e else 0,
                compressed_size=e.compressed_size if e else 0,
                uncompressed_size=e.uncompressed_size if e else 0,
                features=features, readahead_offset=ra_off, readahead_size=ra_size))
        root = self._record(1)[1]
        if root.i_name_size == 0 or not stat.S_ISDIR(root.i_mode):
            raise V5Inode.field_error(
                "i_name_size", self._record(1)[0], structure="RAFS v5 root inode", unsupported=True,
                expected="a directory named '/' (i_name_size 1)", found=root.i_name_size,
                hint="unsupported legacy layout: pre-2021 RAFS v5 inode records")

    @staticmethod
    def _check_superblock(sb: V5SuperBlock, size: int) -> None:
        S = V5SuperBlock
        if sb.s_magic != v5.RAFS_V5_MAGIC:
            raise S.field_error("s_magic", 0, expected=v5.RAFS_V5_MAGIC, found=sb.s_magic)
        if sb.s_fs_version != v5.RAFS_V5_VERSION:
            raise S.field_error("s_fs_version", 0, expected=v5.RAFS_V5_VERSION, found=sb.s_fs_version)
        if sb.s_sb_size != v5.SUPERBLOCK_SIZE:
            raise S.field_error("s_sb_size", 0, expected=v5.SUPERBLOCK_SIZE, found=sb.s_sb_size)
        if not valid_chunk_size(sb.s_block_size):
            raise S.field_error("s_block_size", 0, expected="a power of two in 4 KiB..16 MiB",
                                found=sb.s_block_size)
        if sb.s_flags & ~KNOWN_SUPER_FLAGS:
            raise S.field_error("s_flags", 0, expected=f"only known bits (mask 0x{KNOWN_SUPER_FLAGS:x})",
                                found=sb.s_flags)
        if sb.s_inodes_count > sb.s_inode_table_entries:
            raise S.field_error("s_inodes_count", 0,
                                expected=f"<= s_inode_table_entries ({sb.s_inode_table_entries})",
                                found=sb.s_inodes_count)
        if sb.s_inode_table_entries == 0:
            raise S.field_error("s_inode_table_entries", 0, expected="at least 1 (the root)", found=0)
        tables = [
            ("s_inode_table_offset", sb.s_inode_table_offset, align(4 * sb.s_inode_table_entries, 8)),
            ("s_prefetch_table_offset", sb.s_prefetch_table_offset, align(4 * sb.s_prefetch_table_entries, 8)),
            ("s_blob_table_offset", sb.s_blob_table_offset, sb.s_blob_table_size),
            ("s_extended_blob_table_offset", sb.s_extended_blob_table_offset,
             64 * sb.s_extended_blob_table_entries),
        ]
        spans = []
        for field, off, length in tables:
            if length == 0:
                continue
            if off % 8 or off < v5.SUPERBLOCK_SIZE or off + length > size:
                raise S.field_error(field, 0, expected=f"an 8-aligned table of {length} bytes inside 8192..{size}",
                                    found=off)
            spans.append((off, off + length, field))
        spans.sort()
        for (a0, a1, fa), (b0, _b1, fb) in zip(spans, spans[1:], strict=False):
            if b0 < a1:
                raise S.field_error(fb, 0, expected=f"a table not overlapping {fa} ({a0}..{a1})", found=b0)

    def backed_bound(self, ino: int) -> int:
        # each chunk info holds at most MAX_CHUNK_SIZE bytes (the blob store refuses larger)
        return _rec(self.inode(ino)).i_child_count * MAX_CHUNK_SIZE

    def max_names(self) -> int:
        return self.entries  # one inode table slot per name (hard links have their own)

    # --- records --------------------------------------------------------------------------
    def _slot(self, index: int) -> int:
        return self.sb.s_inode_table_offset + 4 * (index - 1)

    def _record(self, index: int) -> tuple[int, V5Inode]:
        """(offset, record) of inode index `index` (1-based)."""
        if not 1 <= index <= self.entries:
            raise FormatError("RAFS v5 inode table", field="index", offset=self.sb.s_inode_table_offset,
                              expected=f"1..{self.entries}", found=index)
        (value,) = struct.unpack_from("<I", self.buf, self._slot(index))
        off = value << 3
        if not (v5.SUPERBLOCK_SIZE // 8 < value < MAX_TABLE_VALUE) or off + v5.INODE_SIZE > len(self.buf):
            raise FormatError("RAFS v5 inode table", field=f"slot {index - 1}", offset=self._slot(index),
                              expected=f"an inode record offset/8 inside the file ({len(self.buf)} bytes)",
                              found=value)
        return off, V5Inode.decode(self.buf, off)

    def _name(self, off: int, rec: V5Inode) -> bytes:
        n = rec.i_name_size
        if n == 0 or n > v5.MAX_NAME + 1 or off + 128 + n > len(self.buf):
            raise V5Inode.field_error("i_name_size", off, expected="1..256 bytes inside the file", found=n)
        return bytes(self.buf[off + 128:off + 128 + n])

    def _layout(self, off: int, rec: V5Inode) -> tuple[int, int]:
        """(symlink offset, offset after symlink)."""
        sym = off + 128 + align(rec.i_name_size, 8)
        return sym, sym + align(rec.i_symlink_size, 8)

    def _xattr_span(self, off: int, rec: V5Inode) -> tuple[list[tuple[bytes, bytes]], int]:
        _, after = self._layout(off, rec)
        if rec.i_flags & _XATTR:
            pairs, size = v5.decode_xattrs(self.buf, after)
            return pairs, after + size
        return [], after

    def _inode_from(self, ino: int, off: int, rec: V5Inode) -> Inode:
        mode = rec.i_mode
        rdev = dev_from_disk(rec.i_rdev) if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
        return make_inode(ino=ino, mode=mode, uid=rec.i_uid, gid=rec.i_gid, size=rec.i_size,
                          nlink=rec.i_nlink, mtime=rec.i_mtime, mtime_nsec=rec.i_mtime_nsec, rdev=rdev,
                          implicit=bool(decode_mark(rec.i_reserved) & MARK_IMPLICIT_DIR), offset=off,
                          record=rec)

    @names_file
    def _load_inode(self, ino: int) -> Inode:
        off, rec = self._record(ino)
        return self._inode_from(ino, off, rec)

    def _child_range(self, ino: int) -> tuple[int, int]:
        node = self.inode(ino)
        rec = _rec(node)
        if not node.is_dir:
            raise V5Inode.field_error("i_mode", node.offset, expected="a directory", found=oct(rec.i_mode))
        first, count = rec.i_child_index, rec.i_child_count
        if count and (first < 2 or first + count - 1 > self.entries):
            raise V5Inode.field_error("i_child_index", node.offset,
                                      expected=f"a child range inside 2..{self.entries}",
                                      found=f"{first}+{count}")
        return first, count

    def _child(self, index: int) -> tuple[bytes, int]:
        off, rec = self._record(index)
        if rec.i_ino == 0 or rec.i_ino > self.entries:
            raise V5Inode.field_error("i_ino", off, expected=f"1..{self.entries}", found=rec.i_ino)
        return self._name(off, rec), rec.i_ino

    @names_file
    def _load_children(self, ino: int) -> tuple[tuple[bytes, int], ...]:
        first, count = self._child_range(ino)
        return tuple(self._child(i) for i in range(first, first + count))

    @names_file
    def lookup(self, parent: int, name: bytes) -> int:
        first, count = self._child_range(parent)
        lo, hi = first, first + count
        while lo < hi:  # children are sorted by name bytes: binary search
            mid = (lo + hi) // 2
            child_name, child_ino = self._child(mid)
            if child_name == name:
                return child_ino
            if child_name < name:
                lo = mid + 1
            else:
                hi = mid
        raise NotFoundError(f"{self.name}: no entry {name!r} in directory inode {parent}")

    @names_file
    def readlink(self, ino: int) -> bytes:
        node = self.inode(ino)
        rec = _rec(node)
        if not node.is_symlink:
            raise V5Inode.field_error("i_mode", node.offset, expected="a symlink", found=oct(rec.i_mode))
        sym, _ = self._layout(node.offset, rec)
        if sym + rec.i_symlink_size > len(self.buf):
            raise V5Inode.field_error("i_symlink_size", node.offset, expected="a target inside the file",
                                      found=rec.i_symlink_size)
        return bytes(self.buf[sym:sym + rec.i_symlink_size])

    @names_file
    def xattrs(self, ino: int) -> list[tuple[bytes, bytes]]:
        node = self.inode(ino)
        return self._xattr_span(node.offset, _rec(node))[0]

    @names_file
    def _load_chunks(self, ino: int) -> tuple[ChunkInfo, ...]:
        node = self.inode(ino)
        if not node.is_reg:
            return ()
        return self.chunks_at(node.offset, _rec(node))

    @names_file
    def chunks_at(self, off: int, rec: V5Inode) -> tuple[ChunkInfo, ...]:
        """The chunk infos following the regular-file record at `off`."""
        _, pos = self._xattr_span(off, rec)
        count = rec.i_child_count
        if pos + count * v5.CHUNK_INFO_SIZE > len(self.buf):
            raise V5Inode.field_error("i_child_count", off, expected="chunk infos inside the file", found=count)
        return tuple(ChunkInfo.decode(self.buf, pos + i * v5.CHUNK_INFO_SIZE) for i in range(count))

    # --- dump support ---------------------------------------------------------------------
    @names_file
    def record_of(self, index: int) -> tuple[int, V5Inode, bytes]:
        """(offset, record, name) of inode index `index` (hard-link names have their own)."""
        off, rec = self._record(index)
        return off, rec, self._name(off, rec)

    def superblocks(self) -> list[Record]:
        return [self.sb]

    def table_spans(self) -> list[tuple[str, int, int]]:
        sb = self.sb
        return [("inode table", sb.s_inode_table_offset, 4 * sb.s_inode_table_entries),
                ("prefetch table", sb.s_prefetch_table_offset, 4 * sb.s_prefetch_table_entries),
                ("blob table", sb.s_blob_table_offset, sb.s_blob_table_size)]

    def records(self) -> list[tuple[str, int, Record]]:
        sb = self.sb
        out: list[tuple[str, int, Record]] = [("superblock", 0, sb)]
        for i, e in enumerate(self.ext_blob_entries):
            out.append((f"extended blob entry {i}", sb.s_extended_blob_table_offset + 64 * i, e))
        return out

    @names_file
    def child_indexes(self, ino: int) -> range:
        first, count = self._child_range(ino)
        return range(first, first + count)

    def inode_digest(self, ino: int) -> bytes:
        return _rec(self.inode(ino)).i_digest

    def regions(self) -> Iterator[Region]:
        sb = self.sb
        yield Region(0, sb.encode(), "superblock")
        slots = u32_array(self.buf, sb.s_inode_table_offset, sb.s_inode_table_entries, "inode table")
        yield Region(sb.s_inode_table_offset, encode_u32_array(slots, 8), "inode table")
        if sb.s_prefetch_table_entries:
            yield Region(sb.s_prefetch_table_offset, encode_u32_array(self.prefetch, 8), "prefetch table")
        if sb.s_blob_table_size:
            yield Region(sb.s_blob_table_offset, v5.encode_blob_table(self.raw_blob_entries), "blob table")
        for i, e in enumerate(self.ext_blob_entries):
            yield Region(sb.s_extended_blob_table_offset + i * v5.EXT_BLOB_ENTRY_SIZE, e.encode(),
                         f"extended blob entry {i}")
        for index in range(1, sb.s_inode_table_entries + 1):
            off, rec, name = self.record_of(index)
            what = f"inode index {index}"
            yield Region(off, rec.encode(), what)
            yield Region(off + 128, name + bytes(align(len(name), 8) - len(name)), what + " name")
            sym, after = self._layout(off, rec)
            if rec.i_symlink_size:
                target = bytes(self.buf[sym:sym + rec.i_symlink_size])
                yield Region(sym, target, what + " symlink")
            if rec.i_flags & InodeFlagsV5.XATTR:
                pairs, _size = v5.decode_xattrs(self.buf, after)
                yield Region(after, v5.encode_xattrs(pairs), what + " xattrs")
            if stat.S_ISREG(rec.i_mode):
                _, pos = self._xattr_span(off, rec)
                yield Region(pos, _chunk_infos(self.chunks_at(off, rec)), what + " chunk infos")


def _rec(node: Inode) -> V5Inode:
    return cast(V5Inode, node.record)   # what this reader decodes


def _chunk_infos(chunks: tuple[ChunkInfo, ...] | list[ChunkInfo]) -> bytes:
    return b"".join(c.encode() for c in chunks)
