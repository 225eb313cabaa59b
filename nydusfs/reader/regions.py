"""Re-encode every structure the reader decodes, at its file offset.

`reencode(image)` writes each decoded record, table, name, xattr area, dirent block, inline
tail and chunk index back into a zeroed buffer of the bootstrap's size. For a well-formed
bootstrap the result equals the file byte for byte; any byte the decoders skip or misread
shows up as a difference. This is the decode -> encode proof the format core promises, and a
completeness check of the decoders (what they do not read, they cannot write back).
"""

from __future__ import annotations

import dataclasses
import stat
from typing import Iterator

from ..format import v5, v6
from ..format.flags import InodeFlagsV5
from ..format.record import align, encode_u32_array, u32_array
from ..format.v5 import ChunkInfo
from .base import Image


@dataclasses.dataclass(frozen=True, slots=True)
class Region:
    offset: int
    data: bytes
    what: str


def regions(image: Image) -> Iterator[Region]:
    """Every decoded structure of the bootstrap as (offset, re-encoded bytes, description)."""
    if image.version == 5:
        yield from _regions_v5(image)
    else:
        yield from _regions_v6(image)


def reencode(image: Image) -> bytes:
    out = bytearray(len(image.buf))
    for r in regions(image):
        out[r.offset:r.offset + len(r.data)] = r.data
    return bytes(out)


def first_difference(image: Image) -> tuple[int, list[str]] | None:
    """(offset, regions covering it) of the first byte that does not round-trip, else None."""
    raw = bytes(image.buf)
    got = reencode(image)
    if got == raw:
        return None
    at = next(i for i, (a, b) in enumerate(zip(raw, got)) if a != b)
    return at, [r.what for r in regions(image) if r.offset <= at < r.offset + len(r.data)]


# --- RAFS v5 --------------------------------------------------------------------------------

def _regions_v5(image) -> Iterator[Region]:  # type: ignore[no-untyped-def]
    sb = image.sb
    yield Region(0, sb.encode(), "superblock")
    slots = u32_array(image.buf, sb.s_inode_table_offset, sb.s_inode_table_entries, "inode table")
    yield Region(sb.s_inode_table_offset, encode_u32_array(slots, 8), "inode table")
    if sb.s_prefetch_table_entries:
        yield Region(sb.s_prefetch_table_offset, encode_u32_array(image.prefetch, 8), "prefetch table")
    if sb.s_blob_table_size:
        yield Region(sb.s_blob_table_offset, v5.encode_blob_table(image.raw_blob_entries), "blob table")
    for i, e in enumerate(image.ext_blob_entries):
        yield Region(sb.s_extended_blob_table_offset + i * v5.EXT_BLOB_ENTRY_SIZE, e.encode(),
                     f"extended blob entry {i}")
    for index in range(1, sb.s_inode_table_entries + 1):
        off, rec, name = image.record_of(index)
        what = f"inode index {index}"
        yield Region(off, rec.encode(), what)
        yield Region(off + 128, name + bytes(align(len(name), 8) - len(name)), what + " name")
        sym, after = image._layout(off, rec)
        if rec.i_symlink_size:
            target = bytes(image.buf[sym:sym + rec.i_symlink_size])
            yield Region(sym, target, what + " symlink")
        if rec.i_flags & InodeFlagsV5.XATTR:
            pairs, _size = v5.decode_xattrs(image.buf, after)
            yield Region(after, v5.encode_xattrs(pairs), what + " xattrs")
        if stat.S_ISREG(rec.i_mode):
            _, pos = image._xattr_span(off, rec)
            yield Region(pos, _chunk_infos(image.chunks_at(off, rec)), what + " chunk infos")


def _chunk_infos(chunks: tuple[ChunkInfo, ...] | list[ChunkInfo]) -> bytes:
    return b"".join(c.encode() for c in chunks)


# --- RAFS v6 --------------------------------------------------------------------------------

def _regions_v6(image) -> Iterator[Region]:  # type: ignore[no-untyped-def]
    sb, ext = image.sb, image.ext
    for what, off, rec in image.records():
        yield Region(off, rec.encode(), what)
    if ext.s_prefetch_table_offset and ext.s_prefetch_table_size:
        raw = u32_array(image.buf, ext.s_prefetch_table_offset, ext.s_prefetch_table_size // 4,
                        "prefetch table")
        yield Region(ext.s_prefetch_table_offset, encode_u32_array(raw), "prefetch table")
    for pos, c in image.chunk_table():
        yield Region(pos, c.encode(), "chunk table entry")
    seen: set[int] = set()
    todo = [sb.root_nid]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        yield from _inode_v6(image, nid)
        if image.inode(nid).is_dir:
            todo.extend(child for _name, child, _t in image.dirents(nid))


def _inode_v6(image, nid: int) -> Iterator[Region]:  # type: ignore[no-untyped-def]
    node = image.inode(nid)
    rec = node.record
    what = f"nid {nid}"
    yield Region(node.offset, rec.encode(), what)
    if rec.i_xattr_icount:
        header, entries = v6.decode_xattr_area(image.buf, node.offset + rec.SIZE, rec.i_xattr_icount)
        yield Region(node.offset + rec.SIZE, v6.encode_xattr_area(header, entries), what + " xattrs")
    if v6.data_layout(rec.i_format) == v6.LAYOUT_CHUNK_BASED:
        if node.is_reg:
            addrs = image.chunk_addrs(nid)
            pos = align(image._body(node), v6.CHUNK_ADDR_SIZE)
            yield Region(pos, b"".join(a.encode() for a in addrs), what + " chunk indexes")
        return
    for i, (off, length) in enumerate(image._data_blocks(node)):
        if node.is_dir:
            records = v6.decode_dir_records(image.buf[off:off + length], off)
            yield Region(off, v6.encode_dir_records(records, length), f"{what} dirent block {i}")
        else:  # symlink target or flat file data: opaque bytes
            yield Region(off, bytes(image.buf[off:off + length]), f"{what} data block {i}")
