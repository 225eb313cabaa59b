"""Lazy reader of RAFS v6 (EROFS) bootstraps. Inode numbers are nids, as the kernel shows."""

from __future__ import annotations

import array
import stat
import struct
import threading
from typing import Any, Iterator, cast

from ..errors import FormatError, NotFoundError
from ..format import v6
from ..format.blob import COMPRESSOR_NAMES, DIGESTER_NAMES, MAX_CHUNKS_PER_BLOB, valid_chunk_size
from ..format.flags import KNOWN_SUPER_FLAGS, SuperFlags, compressor_of, digester_of
from ..format.layer import LayerLayout
from ..format.record import Record, align, cstr, encode_u32_array, u32_array
from ..format.v5 import CHUNK_INFO_SIZE, ChunkInfo
from ..format.v6 import (ChunkAddr, DeviceSlot, ErofsSuperBlock, InodeCompact, InodeExtended,
                         V6BlobEntry, V6SuperBlockExt)
from .base import Image, names_file
from .chunkmap import NoDigestChunk
from .model import (MARK_IMPLICIT_DIR, BlobInfo, Inode, Region, decode_mark, dev_from_disk, make_inode,
                    stem_owners)


_FILE_OFFSET = ChunkInfo._names.index("file_offset")
# a chunk index is two u32 words; blkaddr is one of them (chunk_place_problem reads it alone)
_BLKADDR_WORD = ChunkAddr.field_offset("blkaddr") // 4
assert ChunkAddr.SIZE == 8 and ChunkAddr._sizes["blkaddr"] == 4 and ChunkAddr.field_offset("blkaddr") % 4 == 0


class ImageV6(Image):
    version = 6

    def __init__(self, name: str, buf: Any, layout: LayerLayout, keepalive: Any, stem: str) -> None:
        self._chunk_map: _ChunkTable | None = None
        self._chunk_map_lock = threading.Lock()
        super().__init__(name, buf, layout, keepalive, stem)

    def _open(self, stem: str) -> None:
        buf = self.buf
        sb = self.sb = ErofsSuperBlock.decode(buf, v6.SUPERBLOCK_OFFSET)
        ext = self.ext = V6SuperBlockExt.decode(buf, v6.EXT_SUPERBLOCK_OFFSET)
        self._check(sb, ext, len(buf))
        self.bs = 1 << sb.blkszbits
        self.meta_start = sb.meta_blkaddr * self.bs
        self.flags = ext.s_flags
        self.chunk_size = ext.s_chunk_size
        self.compressor = compressor_of(ext.s_flags)
        self.digester = digester_of(ext.s_flags)
        self.tarfs = bool(ext.s_flags & SuperFlags.TARTFS_MODE)
        self.root_ino = sb.root_nid
        self.inode_count = sb.inos
        self.devices = [DeviceSlot.decode(buf, sb.devt_slotoff * 128 + i * 128)
                        for i in range(sb.extra_devices)]
        n_blobs = ext.s_blob_table_size // v6.BLOB_ENTRY_SIZE
        self.blob_entries = [V6BlobEntry.decode(buf, ext.s_blob_table_offset + i * v6.BLOB_ENTRY_SIZE)
                             for i in range(n_blobs)]
        self.blobs = []
        stemmed = stem_owners([(cstr(e.blob_id).decode("utf-8", "surrogateescape"), e.features)
                               for e in self.blob_entries], stem)
        for i, e in enumerate(self.blob_entries):
            _check_blob_entry(e, i, ext.s_blob_table_offset + i * v6.BLOB_ENTRY_SIZE)
            raw_id = cstr(e.blob_id).decode("utf-8", "surrogateescape")
            features = e.features
            blob_id = stem if i in stemmed else raw_id
            self.blobs.append(BlobInfo(
                index=i, blob_id=blob_id, raw_id=raw_id,
                compressor=COMPRESSOR_NAMES.get(e.compression_algo, f"unknown({e.compression_algo})"),
                digester=DIGESTER_NAMES.get(e.digest_algo, f"unknown({e.digest_algo})"),
                chunk_size=e.chunk_size, chunk_count=e.chunk_count,
                compressed_size=e.compressed_size, uncompressed_size=e.uncompressed_size,
                features=features, v6=e, device=self.devices[i] if i < len(self.devices) else None))
        self.prefetch = []
        if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
            raw = u32_array(buf, ext.s_prefetch_table_offset, ext.s_prefetch_table_size // 4,
                            "RAFS v6 prefetch table")
            for nid in raw:
                if nid == 0:
                    break
                self.prefetch.append(nid)
        root = self.inode(self.root_ino)
        if not root.is_dir:
            raise ErofsSuperBlock.field_error("root_nid", v6.SUPERBLOCK_OFFSET, expected="the nid of a directory",
                                              found=sb.root_nid)

    @staticmethod
    def _check(sb: ErofsSuperBlock, ext: V6SuperBlockExt, size: int) -> None:
        S, X = ErofsSuperBlock, V6SuperBlockExt
        base, xbase = v6.SUPERBLOCK_OFFSET, v6.EXT_SUPERBLOCK_OFFSET
        if sb.magic != v6.EROFS_MAGIC:
            raise S.field_error("magic", base, expected=v6.EROFS_MAGIC, found=sb.magic)
        if not 9 <= sb.blkszbits <= 12:
            raise S.field_error("blkszbits", base, expected="9..12", found=sb.blkszbits)
        bs = 1 << sb.blkszbits
        if sb.feature_incompat & ~v6.FEATURE_INCOMPAT_RAFS_V6:
            raise S.field_error("feature_incompat", base, unsupported=True,
                                expected="only CHUNKED_FILE|DEVICE_TABLE (0xc)", found=sb.feature_incompat,
                                hint="EROFS compression and newer layouts are not RAFS v6")
        if sb.xattr_blkaddr:
            raise S.field_error("xattr_blkaddr", base, unsupported=True, expected=0, found=sb.xattr_blkaddr,
                                hint="shared xattrs")
        if sb.meta_blkaddr * bs > size:
            raise S.field_error("meta_blkaddr", base, expected=f"a block inside the {size}-byte file",
                                found=sb.meta_blkaddr)
        if sb.extra_devices and sb.devt_slotoff * 128 + sb.extra_devices * 128 > size:
            raise S.field_error("devt_slotoff", base, expected="a device table inside the file",
                                found=sb.devt_slotoff)
        if ext.s_flags & ~KNOWN_SUPER_FLAGS:
            raise X.field_error("s_flags", xbase, expected=f"only known bits (mask 0x{KNOWN_SUPER_FLAGS:x})",
                                found=ext.s_flags)
        if not (ext.s_flags & SuperFlags.TARTFS_MODE or valid_chunk_size(ext.s_chunk_size)):
            raise X.field_error("s_chunk_size", xbase, expected="a power of two in 4 KiB..16 MiB",
                                found=ext.s_chunk_size)
        if ext.s_chunk_size == 0 or ext.s_chunk_size & (ext.s_chunk_size - 1):
            raise X.field_error("s_chunk_size", xbase, expected="a power of two", found=ext.s_chunk_size)
        tables = [("s_blob_table_offset", ext.s_blob_table_offset, ext.s_blob_table_size,
                   v6.BLOB_ENTRY_SIZE),
                  ("s_chunk_table_offset", ext.s_chunk_table_offset, ext.s_chunk_table_size,
                   CHUNK_INFO_SIZE)]
        if ext.s_prefetch_table_offset:
            tables.append(("s_prefetch_table_offset", ext.s_prefetch_table_offset,
                           ext.s_prefetch_table_size, 4))
        for field, off, length, unit in tables:
            if length == 0:
                continue
            if length % unit or off + length > size or off < v6.DEVICE_TABLE_OFFSET:
                raise X.field_error(field, xbase, expected=f"a table of whole {unit}-byte entries inside the "
                                    f"{size}-byte file", found=f"{off}+{length}")

    def max_names(self) -> int:
        # a name costs a 12-byte dirent and at least one byte in a directory block
        return 1 + len(self.buf) // (v6.DIRENT_SIZE + 1)

    # --- inodes ---------------------------------------------------------------------------
    def _inode_at(self, nid: int) -> tuple[int, InodeCompact | InodeExtended]:
        off = self.meta_start + nid * v6.INODE_SLOT
        if nid < 0 or off + 2 > len(self.buf):
            raise FormatError("EROFS inode", field="nid", offset=off,
                              expected=f"an inode inside the {len(self.buf)}-byte file", found=nid)
        i_format = self.buf[off] | (self.buf[off + 1] << 8)
        cls = v6.inode_class(i_format)
        rec = cls.decode(self.buf, off)
        if i_format >> 4 or v6.data_layout(i_format) not in (0, 2, 4):
            raise cls.field_error("i_format", off, unsupported=True, found=i_format,
                                  expected=f"a plain, inline or chunk-based layout (nid {nid})")
        return off, rec

    @names_file
    def _load_inode(self, nid: int) -> Inode:
        off, rec = self._inode_at(nid)
        mode = rec.i_mode
        rdev = dev_from_disk(rec.i_u) if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
        if isinstance(rec, InodeExtended):
            mtime, nsec, mark = rec.i_mtime, rec.i_mtime_nsec, decode_mark(rec.i_reserved2)
        else:  # compact inodes keep no mtime; show what the kernel shows
            mtime, nsec, mark = self.sb.build_time + rec.i_mtime_delta, self.sb.build_time_nsec, 0
        return make_inode(ino=nid, mode=mode, uid=rec.i_uid, gid=rec.i_gid, size=rec.i_size,
                          nlink=rec.i_nlink, mtime=mtime, mtime_nsec=nsec, rdev=rdev,
                          implicit=bool(mark & MARK_IMPLICIT_DIR), offset=off, record=rec)

    def link_key(self, ino: int) -> object:
        """Current builders give hard links one shared nid; 2022 builders wrote one inode per
        name sharing `i_ino` (seen in upstream data), so regular files with nlink > 1 are
        grouped by `i_ino`."""
        node = self.inode(ino)
        if node.nlink > 1 and not node.is_dir:
            return ("i_ino", _rec(node).i_ino)
        return ino

    def _body(self, node: Inode) -> int:
        """Offset right after the inode and its inline xattrs."""
        return node.offset + _rec(node).SIZE + v6.xattr_area_size(_rec(node).i_xattr_icount)

    def _data_blocks(self, node: Inode) -> list[tuple[int, int]]:
        """(offset, length) of each data block of a plain or inline inode."""
        rec = _rec(node)
        layout = v6.data_layout(rec.i_format)
        size, bs = node.size, self.bs
        if layout == v6.LAYOUT_CHUNK_BASED:
            raise rec.field_error("i_format", node.offset, expected="a plain or inline data layout",
                                  found=rec.i_format)
        nblocks = (size + bs - 1) // bs
        spans = []
        for i in range(nblocks):
            length = min(bs, size - i * bs)
            if layout == v6.LAYOUT_FLAT_INLINE and i == nblocks - 1:
                off = self._body(node)
                if off // bs != (off + length - 1) // bs and length:
                    raise rec.field_error("i_size", node.offset, expected="an inline tail inside the inode's block",
                                          found=size)
            else:
                off = (rec.i_u + i) * bs
            if off + length > len(self.buf):
                raise rec.field_error("i_u", node.offset, expected=f"data blocks inside the {len(self.buf)}-byte file",
                                      found=rec.i_u)
            spans.append((off, length))
        return spans

    def _dir_block(self, node: Inode, spans: list[tuple[int, int]], i: int) -> list[tuple[bytes, int, int]]:
        off, length = spans[i]
        return v6.decode_dir_block(self.buf[off:off + length], off)

    def _dir_spans(self, ino: int) -> tuple[Inode, list[tuple[int, int]]]:
        node = self.inode(ino)
        if not node.is_dir:
            raise _rec(node).field_error("i_mode", node.offset, expected="a directory", found=oct(node.mode))
        return node, self._data_blocks(node)

    @names_file
    def _load_children(self, ino: int) -> tuple[tuple[bytes, int], ...]:
        node, spans = self._dir_spans(ino)
        out = []
        for i in range(len(spans)):
            for name, nid, _ftype in self._dir_block(node, spans, i):
                if name not in (b".", b".."):
                    out.append((name, nid))
        return tuple(out)

    @names_file
    def lookup(self, parent: int, name: bytes) -> int:
        node, spans = self._dir_spans(parent)
        lo, hi = 0, len(spans)
        while lo < hi:  # blocks are sorted: find the last block whose first name <= name
            mid = (lo + hi) // 2
            first = self._dir_block(node, spans, mid)[0][0]
            if first <= name:
                lo = mid + 1
            else:
                hi = mid
        if lo:
            for n, nid, _ in self._dir_block(node, spans, lo - 1):
                if n == name and name not in (b".", b".."):
                    return nid
        raise NotFoundError(f"{self.name}: no entry {name!r} in directory nid {parent}")

    @names_file
    def dirents(self, ino: int) -> list[tuple[bytes, int, int]]:
        """Every dirent with its file type, '.' and '..' included (for dump and checks)."""
        node, spans = self._dir_spans(ino)
        return [e for i in range(len(spans)) for e in self._dir_block(node, spans, i)]

    @names_file
    def readlink(self, ino: int) -> bytes:
        node = self.inode(ino)
        if not node.is_symlink:
            raise _rec(node).field_error("i_mode", node.offset, expected="a symlink", found=oct(node.mode))
        return b"".join(bytes(self.buf[o:o + n]) for o, n in self._data_blocks(node))

    @names_file
    def flat_data(self, ino: int) -> bytes | None:
        node = self.inode(ino)
        if v6.data_layout(_rec(node).i_format) == v6.LAYOUT_CHUNK_BASED:
            return None
        return b"".join(bytes(self.buf[o:o + n]) for o, n in self._data_blocks(node))

    @names_file
    def xattrs(self, ino: int) -> list[tuple[bytes, bytes]]:
        node = self.inode(ino)
        icount = _rec(node).i_xattr_icount
        if not icount:
            return []
        return v6.decode_xattrs(self.buf, node.offset + _rec(node).SIZE, icount)

    # --- chunks ---------------------------------------------------------------------------
    @names_file
    def chunk_addrs(self, ino: int) -> list[ChunkAddr]:
        make = ChunkAddr.maker()
        return [make(*fields) for fields in ChunkAddr._struct.iter_unpack(self._chunk_indexes(ino))]

    @names_file
    def _chunk_indexes(self, ino: int) -> Any:
        """The bytes of the inode's chunk indexes (none unless chunk-based)."""
        node = self.inode(ino)
        rec = _rec(node)
        if not node.is_reg or v6.data_layout(rec.i_format) != v6.LAYOUT_CHUNK_BASED:
            return b""
        # nydus writes one index per superblock chunk even when i_u announces one larger chunk
        count = (node.size + self.chunk_size - 1) // self.chunk_size
        pos = align(self._body(node), v6.CHUNK_ADDR_SIZE)
        if pos + count * v6.CHUNK_ADDR_SIZE > len(self.buf):
            raise rec.field_error("i_size", node.offset, expected="chunk indexes inside the file", found=node.size)
        return self.buf[pos:pos + count * v6.CHUNK_ADDR_SIZE]

    def _table(self) -> "_ChunkTable":
        table = self._chunk_map
        if table is not None:  # built once; no lock needed to read it afterwards
            return table
        with self._chunk_map_lock:
            if self._chunk_map is None:
                ext = self.ext
                self._chunk_map = _ChunkTable(self.buf, ext.s_chunk_table_offset, ext.s_chunk_table_size)
            return self._chunk_map

    def chunk_table(self) -> Iterator[tuple[int, ChunkInfo]]:
        """(offset, record) of each chunk table entry, one at a time: a list of them all would
        cost about 200 bytes per chunk of the image (the table was bounded at open)."""
        ext = self.ext
        for pos in range(ext.s_chunk_table_offset, ext.s_chunk_table_offset + ext.s_chunk_table_size,
                         CHUNK_INFO_SIZE):
            yield pos, ChunkInfo.decode(self.buf, pos)

    @names_file
    def _load_chunks(self, ino: int) -> tuple[ChunkInfo, ...]:
        addrs = self.chunk_addrs(ino)
        if not addrs:
            return ()
        size = self.inode(ino).size
        out = []
        for i, a in enumerate(addrs):
            file_offset = i * self.chunk_size
            length = min(self.chunk_size, size - file_offset)
            out.append(self._resolve(a, file_offset, length, ino))
        return tuple(out)

    def _resolve(self, a: ChunkAddr, file_offset: int, length: int, ino: int) -> ChunkInfo:
        if not 0 <= a.blob_index < len(self.blobs):
            raise FormatError("RAFS v6 chunk index", field="device_id", offset=self.inode(ino).offset,
                              expected=f"a blob index below {len(self.blobs)} (nid {ino})",
                              found=a.blob_index)
        if self.tarfs:
            off = a.blkaddr * self.bs
            return NoDigestChunk(bytes(32), a.blob_index, 0, length, length, off, off, file_offset,
                                 a.ci_index, 0)
        pos = self._table().get(a.blob_index, a.ci_index)
        if pos is not None:
            # decode with this file's offset in place (dataclasses.replace costs more than
            # the decode, and dump resolves every chunk of the image)
            fields = list(ChunkInfo._struct.unpack_from(self.buf, pos))
            fields[_FILE_OFFSET] = file_offset
            return ChunkInfo.maker()(*fields)
        # the blob meta stands in only for a bootstrap without a chunk table: a table that lacks
        # the entry (or names another blob in it) is a lie the reader must not paper over
        if self.blob_store is not None and not self.ext.s_chunk_table_size:
            found = self.blob_store.ci_entry(a.blob_index, a.ci_index)
            if found is not None:
                return found.replace(file_offset=file_offset)
        raise FormatError("RAFS v6 chunk table", field="index", offset=self.ext.s_chunk_table_offset,
                          expected=f"an entry for blob {a.blob_index} chunk {a.ci_index}",
                          found="none", hint="the chunk table has no such entry" if self.ext.s_chunk_table_size
                          else "no chunk table entry and no blob meta to fall back on")

    def table_chunks(self) -> Iterator[tuple[int, ChunkInfo]]:
        return self.chunk_table()

    def chunk_place_problem(self, ino: int) -> tuple[int, str] | None:
        """A chunk index records the chunk's uncompressed block too: an index that names another
        chunk of the blob (or a table entry with another offset) shows here."""
        if self.tarfs:
            return None
        # the indexes' blkaddr fields without decoding ChunkAddr records (read checks every
        # file it opens)
        raw = self._chunk_indexes(ino)
        blkaddrs = struct.unpack_from(f"<{len(raw) // 4}I", raw)[_BLKADDR_WORD::2]
        bs = self.bs
        for i, (blkaddr, c) in enumerate(zip(blkaddrs, self.chunks(ino), strict=False)):
            if blkaddr * bs != c.uncompressed_offset:
                return i, (f"uncompressed_offset {c.uncompressed_offset}, but the inode's chunk "
                           f"index says block {blkaddr} ({blkaddr * bs})")
        return None

    # --- dump support ---------------------------------------------------------------------
    def keeps_mtime(self, ino: int) -> bool:
        return isinstance(_rec(self.inode(ino)), InodeExtended)

    def superblocks(self) -> list[Record]:
        return [self.sb, self.ext]

    def table_spans(self) -> list[tuple[str, int, int]]:
        ext = self.ext
        meta_end = ext.s_chunk_table_offset if ext.s_chunk_table_offset > self.meta_start else len(self.buf)
        return [("prefetch table", ext.s_prefetch_table_offset, ext.s_prefetch_table_size),
                ("chunk table", ext.s_chunk_table_offset, ext.s_chunk_table_size),
                ("meta area", self.meta_start, meta_end - self.meta_start)]

    def records(self) -> list[tuple[str, int, Record]]:
        out: list[tuple[str, int, Record]] = [("superblock", v6.SUPERBLOCK_OFFSET, self.sb),
                                           ("extended superblock", v6.EXT_SUPERBLOCK_OFFSET, self.ext)]
        for i, d in enumerate(self.devices):
            out.append((f"device slot {i}", self.sb.devt_slotoff * 128 + 128 * i, d))
        for i, e in enumerate(self.blob_entries):
            out.append((f"blob entry {i}", self.ext.s_blob_table_offset + 256 * i, e))
        return out

    def regions(self) -> Iterator[Region]:
        sb, ext = self.sb, self.ext
        for what, off, rec in self.records():
            yield Region(off, rec.encode(), what)
        if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
            raw = u32_array(self.buf, ext.s_prefetch_table_offset, ext.s_prefetch_table_size // 4,
                            "prefetch table")
            yield Region(ext.s_prefetch_table_offset, encode_u32_array(raw), "prefetch table")
        for pos, c in self.chunk_table():
            yield Region(pos, c.encode(), "chunk table entry")
        seen: set[int] = set()
        todo = [sb.root_nid]
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            yield from self._inode_regions(nid)
            if self.inode(nid).is_dir:
                todo.extend(child for _name, child, _t in self.dirents(nid))

    def _inode_regions(self, nid: int) -> Iterator[Region]:
        node = self.inode(nid)
        rec = _rec(node)
        what = f"nid {nid}"
        yield Region(node.offset, rec.encode(), what)
        if rec.i_xattr_icount:
            header, entries = v6.decode_xattr_area(self.buf, node.offset + rec.SIZE, rec.i_xattr_icount)
            yield Region(node.offset + rec.SIZE, v6.encode_xattr_area(header, entries), what + " xattrs")
        if v6.data_layout(rec.i_format) == v6.LAYOUT_CHUNK_BASED:
            if node.is_reg:
                addrs = self.chunk_addrs(nid)
                pos = align(self._body(node), v6.CHUNK_ADDR_SIZE)
                yield Region(pos, b"".join(a.encode() for a in addrs), what + " chunk indexes")
            return
        for i, (off, length) in enumerate(self._data_blocks(node)):
            if node.is_dir:
                records = v6.decode_dir_records(self.buf[off:off + length], off)
                yield Region(off, v6.encode_dir_records(records, length), f"{what} dirent block {i}")
            else:  # symlink target or flat file data: opaque bytes
                yield Region(off, bytes(self.buf[off:off + length]), f"{what} data block {i}")


def _rec(node: Inode) -> InodeCompact | InodeExtended:
    return cast("InodeCompact | InodeExtended", node.record)   # what this reader decodes


def _check_blob_entry(e: V6BlobEntry, index: int, off: int) -> None:
    """The blob-table fields the reader acts on (upstream rejects the same values)."""
    B = V6BlobEntry
    checks = (
        ("blob_index", e.blob_index == index, index),
        ("compression_algo", e.compression_algo in COMPRESSOR_NAMES, "0..3 (none, lz4_block, gzip, zstd)"),
        ("ci_compressor", e.ci_compressor in COMPRESSOR_NAMES, "0..3 (none, lz4_block, gzip, zstd)"),
        ("digest_algo", e.digest_algo in DIGESTER_NAMES, "0 (blake3) or 1 (sha256)"),
        ("chunk_count", e.chunk_count <= MAX_CHUNKS_PER_BLOB, f"at most {MAX_CHUNKS_PER_BLOB}"),
    )
    for field, ok, expected in checks:
        if not ok:
            raise B.field_error(field, off, structure=f"{B.STRUCTURE} {index}", expected=expected,
                                found=getattr(e, field))


class _ChunkTable:
    """Where the chunk table holds the entry of (blob index, chunk index).

    The chunk indexes of a blob are numbered from 0 (nydus and nydusfs number them densely,
    whatever order the table keeps them in), so one array per blob, indexed by chunk index,
    holds each entry's number in the table: 4 bytes per chunk, where a dict costs about 120.
    Indexes too sparse for that (at most twice the blob's entries, plus a margin) fall back to
    the dict, so a crafted index costs no more than its entry."""

    def __init__(self, buf: Any, offset: int, size: int) -> None:
        self.buf = buf
        self.offset = offset
        count = size // CHUNK_INFO_SIZE
        spans: dict[int, list[int]] = {}           # blob index -> [entries, highest index]
        for k in range(count):
            blob, index = self._entry(k)
            span = spans.setdefault(blob, [0, 0])
            span[0] += 1
            span[1] = max(span[1], index)
        self.slots: dict[int, array.array[int]] | None = None   # blob -> entry number + 1 per index
        self.places: dict[int, int] | None = None           # blob << 32 | index -> offset
        if all(top < 2 * n + 1024 for n, top in spans.values()):
            self.slots = {b: array.array("I", bytes(4 * (top + 1))) for b, (_, top) in spans.items()}
            for k in range(count):
                blob, index = self._entry(k)
                self.slots[blob][index] = k + 1        # the last entry of a pair wins, as in a dict
        else:
            self.places = {}
            for k in range(count):
                blob, index = self._entry(k)
                self.places[blob << 32 | index] = offset + k * CHUNK_INFO_SIZE

    def _entry(self, k: int) -> tuple[int, int]:
        pos = self.offset + k * CHUNK_INFO_SIZE
        return (int.from_bytes(self.buf[pos + 32:pos + 36], "little"),
                int.from_bytes(self.buf[pos + 72:pos + 76], "little"))

    def get(self, blob: int, index: int) -> int | None:
        if self.places is not None:
            return self.places.get(blob << 32 | index)
        assert self.slots is not None
        slots = self.slots.get(blob)
        if slots is None or not 0 <= index < len(slots) or not slots[index]:
            return None
        k: int = slots[index] - 1
        return self.offset + k * CHUNK_INFO_SIZE
