"""The data behind `nydusfs dump`: plain dicts built from a reader Image, streamed per inode.

docs/dump.md documents the JSON schema. In short, one object with
  bootstrap, version (5|6), layout ("bootstrap"|"A"|"B"|"tarball")
  superblock  every on-disk superblock field by its upstream name, plus flags_decoded,
              compressor, digester, chunk_size, inode_count
  records     [{structure, offset, size}] of the fixed records and the tables
  blobs       [{index, blob_id, raw_id, compressor, digester, chunk_size, chunk_count,
                compressed_size, uncompressed_size, features, features_decoded,
                readahead_offset, readahead_size, ...v6 blob-table fields, device, file}]
  prefetch    [{ino, path}]
  inodes      [{path, ino, type, mode, uid, gid, size, nlink, mtime, mtime_nsec, rdev,
                symlink, xattrs {name: hex value}, implicit, chunks, offset, ...version fields}]
  chunks      {blob_index, blob_id, file_offset, compressed_offset, compressed_size,
               uncompressed_offset, uncompressed_size, index, digest (hex), flags,
               flags_decoded, crc32}
  verify      {failures: [{path, file_offset, blob_index, index, error}]} (with --verify;
              null fields where a failure concerns a whole file or the whole image)
Numbers are integers (mode is st_mode with type bits, rdev a Linux dev_t); names and paths are
strings decoded with os.fsdecode (undecodable bytes become surrogate escapes).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from .errors import NydusfsError
from .format.flags import BlobFeatures, ChunkFlags, SuperFlags, flag_names
from .format.v5 import ChunkInfo, V5Inode
from .reader import Image, file_kind
from .reader.chunkmap import ImageChunks, file_problem, packed_identity


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def record_fields(rec: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for name, value in rec.as_dict().items():
        if name in skip:
            continue
        if "reserved" in name or name == "s_padding":
            if isinstance(value, bytes) and not any(value):
                continue
            if isinstance(value, int) and value == 0:
                continue
        out[name] = _plain(value)
    return out


def superblock(image: Image) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in image.superblocks():
        out.update(record_fields(rec))
    out["flags_decoded"] = flag_names(image.flags, SuperFlags)
    out["compressor"] = image.compressor
    out["digester"] = image.digester
    out["chunk_size"] = image.chunk_size
    out["inode_count"] = image.inode_count
    return out


def blobs(image: Image) -> list[dict[str, Any]]:
    out = []
    for b in image.blobs:
        d: dict[str, Any] = {
            "index": b.index, "blob_id": b.blob_id, "raw_id": b.raw_id,
            "compressor": b.compressor, "digester": b.digester, "chunk_size": b.chunk_size,
            "chunk_count": b.chunk_count, "compressed_size": b.compressed_size,
            "uncompressed_size": b.uncompressed_size, "features": b.features,
            "features_decoded": flag_names(b.features, BlobFeatures),
            "readahead_offset": b.readahead_offset, "readahead_size": b.readahead_size,
        }
        if b.v6 is not None:
            d.update(record_fields(b.v6, skip=("blob_id", "blob_index", "chunk_size", "chunk_count",
                                               "features", "compressed_size", "uncompressed_size")))
        if b.device is not None:
            d["device"] = record_fields(b.device, skip=("tag",))
        if image.blob_store is not None:
            path = image.blob_store.path_of(b.index)
            d["file"] = path
        out.append(d)
    return out


def prefetch(image: Image, paths: dict[int, bytes] | None = None) -> list[dict[str, Any]]:
    wanted = set(image.prefetch)
    found: dict[int, bytes] = {}
    if wanted:
        for path, ino in image.walk():
            if ino in wanted and ino not in found:
                found[ino] = path
    return [{"ino": ino, "path": os.fsdecode(found[ino]) if ino in found else None}
            for ino in image.prefetch]


def chunk(image: Image, c: ChunkInfo) -> dict[str, Any]:
    blob_id = image.blobs[c.blob_index].blob_id if 0 <= c.blob_index < len(image.blobs) else None
    return {
        "blob_index": c.blob_index, "blob_id": blob_id, "file_offset": c.file_offset,
        "compressed_offset": c.compressed_offset, "compressed_size": c.compressed_size,
        "uncompressed_offset": c.uncompressed_offset, "uncompressed_size": c.uncompressed_size,
        "index": c.index, "digest": c.block_id.hex(), "flags": c.flags,
        "flags_decoded": flag_names(c.flags, ChunkFlags), "crc32": c.crc32,
    }


def inode(image: Image, path: bytes, ino: int, lenient: bool = False) -> dict[str, Any]:
    """One inode as a dict. `lenient` (dump --verify): chunk records the reader cannot resolve
    become `chunks_error` instead of an exception, and verify() reports them as failures."""
    n = image.inode(ino)
    d: dict[str, Any] = {
        "path": os.fsdecode(path), "ino": ino, "type": file_kind(n.mode), "mode": n.mode,
        "uid": n.uid, "gid": n.gid, "size": n.size, "nlink": n.nlink, "mtime": n.mtime,
        "mtime_nsec": n.mtime_nsec, "rdev": n.rdev,
        "symlink": os.fsdecode(image.readlink(ino)) if n.is_symlink else None,
        "xattrs": {os.fsdecode(k): v.hex() for k, v in image.xattrs(ino)},
        "implicit": n.implicit,
        "chunks": [],
    }
    if n.is_reg:
        try:
            d["chunks"] = [chunk(image, c) for c in image.chunks(ino)]
        except NydusfsError as e:
            if not lenient:
                raise
            d["chunks_error"] = str(e)
    rec = n.record
    d["offset"] = n.offset
    if isinstance(rec, V5Inode):
        d.update({"i_parent": rec.i_parent, "i_flags": rec.i_flags, "i_blocks": rec.i_blocks,
                  "i_child_index": rec.i_child_index, "i_child_count": rec.i_child_count,
                  "i_digest": rec.i_digest.hex()})
    else:
        d.update({"i_format": rec.i_format, "i_ino": rec.i_ino, "i_u": rec.i_u,
                  "compact": rec.SIZE == 32})
    return d


def inodes(image: Image, lenient: bool = False) -> Iterator[dict[str, Any]]:
    for path, ino in image.walk():
        yield inode(image, path, ino, lenient)


def tables(image: Image) -> list[dict[str, Any]]:
    """Where the fixed records and the variable-size tables sit in the bootstrap."""
    out = [{"structure": s, "offset": off, "size": rec.SIZE} for s, off, rec in image.records()]
    out.extend({"structure": s, "offset": off, "size": size} for s, off, size in image.table_spans() if size)
    return sorted(out, key=lambda r: r["offset"])


def header(image: Image) -> dict[str, Any]:
    return {
        "bootstrap": image.name, "version": image.version, "layout": image.layout.kind,
        "superblock": superblock(image), "records": tables(image),
        "blobs": blobs(image), "prefetch": prefetch(image),
    }


def verify(image: Image, only: tuple[bytes, int] | None = None) -> Iterator[dict[str, Any]]:
    """Check every chunk (or those of `only`, a (path, ino)); yield one failure dict per problem.

    Each file's chunk map must tile the file as the format requires (reader/chunkmap.py); every
    distinct chunk - by its whole identity, not its offset, so two records of one compressed
    range with different digests are both checked - must read, decompress and match its own
    digest; across the image, one (blob, index) must describe one chunk and distinct chunks
    must not overlap in their blob."""
    assert image.blob_store is not None, "open_image attaches a blob store"
    seen: set[bytes] = set()
    whole = ImageChunks(image)
    for path, ino in (image.walk() if only is None else [only]):
        n = image.inode(ino)
        if not n.is_reg:
            continue
        try:
            chunks = image.chunks(ino)
            problem = file_problem(image, ino)
        except NydusfsError as e:
            yield _failure(path, None, str(e))
            continue
        if problem is not None:
            yield _failure(path, problem[0], f"chunk map: {problem[1]}")
        for c in chunks:
            whole.add(path, c)
            key = packed_identity(c)
            if key in seen:
                continue
            seen.add(key)
            try:
                image.blob_store.load_chunk(c, verify=True)
            except NydusfsError as e:
                yield _failure(path, c, str(e))
    if only is None:
        for where, chunk, message in whole.problems():
            yield _failure(where, chunk, f"chunks: {message}")


def _failure(path: bytes, c: ChunkInfo | None, error: str) -> dict[str, Any]:
    return {"path": os.fsdecode(path) if path else None,
            "file_offset": c.file_offset if c is not None else None,
            "blob_index": c.blob_index if c is not None else None,
            "index": c.index if c is not None else None, "error": error}
