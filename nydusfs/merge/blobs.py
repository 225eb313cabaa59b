"""The merged blob table (merge.md §3).

While sources are loaded, every blob goes into one table keyed by the id the source's
bootstrap reported for it, so a blob that several layers list is stored once. Chunks keep the
blob index of their own source until the end: `finalize` maps them through their layer's
table in one pass, and numbers the blobs in the order the final tree first references them,
which also drops the blobs that nothing references any more (whited-out files, unused
chunk-dict blobs, bootstrap-only layers).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from ..errors import FormatError, MergeError
from ..format.blob import PLACEHOLDER_BLOB_ID
from ..format.flags import BlobFeatures
from ..format.v5 import ChunkInfo
from ..reader import BlobInfo, name_stem
from ..tree.load import blob_desc
from ..tree.node import BlobDesc, Node
from .options import MergeOptions, digest_bytes, strip_algo

V6_MAX_BLOBS = 255          # RAFS v6 chunk indexes hold the blob index in one byte
V6_MAX_BLOB_ID = 64         # device slot tag


def identity(b: BlobInfo) -> str:
    """The id a blob is known by across layers: the stored one. Only a stored placeholder
    stands for the file the bootstrap was read from (the reader then reports the file-name
    stem). The reader also reports the stem for other blobs with inlined metadata, such as a
    chunk-dict blob listed by a layer file, which would make two blobs one."""
    return b.blob_id if b.raw_id in ("", PLACEHOLDER_BLOB_ID) else b.raw_id


def _desc(b: BlobInfo) -> BlobDesc:
    desc = blob_desc(b)
    desc.blob_id = identity(b)
    return desc


@dataclasses.dataclass
class TableEntry:
    desc: BlobDesc
    origin: str             # which layer brought the blob in, for error messages


class BlobTable:
    def __init__(self) -> None:
        self.entries: list[TableEntry] = []
        self.index_of: dict[str, int] = {}      # id as loaded -> entry
        self.layer_maps: dict[int, list[int]] = {}   # layer -> source blob index -> entry
        self.labels: dict[int, str] = {}

    def add(self, loaded_id: str, desc: BlobDesc, origin: str) -> int:
        index = self.index_of.get(loaded_id)
        if index is None:
            index = self.index_of[loaded_id] = len(self.entries)
            self.entries.append(TableEntry(desc, origin))
        return index

    def add_parent(self, layer: int, blobs: list[BlobInfo], origin: str) -> None:
        self.layer_maps[layer] = [self.add(identity(b), _desc(b), origin) for b in blobs]
        self.labels[layer] = origin

    def add_source(self, layer: int, position: int, path: str, blobs: list[BlobInfo],
                   dict_ids: set[str], options: MergeOptions, origin: str) -> None:
        """Register one source's blobs. Besides chunk-dict blobs and blobs that lower layers
        already brought in, a layer may have one blob of its own; that one gets the id the
        merged image will find it under."""
        mapping = []
        own: BlobInfo | None = None
        for b in blobs:
            desc, key = _desc(b), identity(b)
            if key not in dict_ids and key not in self.index_of:
                if own is not None:
                    raise MergeError(
                        f"{origin} references two data blobs of its own ({identity(own)} and "
                        f"{key}); a layer may have one, plus chunk-dict blobs "
                        f"(--chunk-dict) and blobs of lower layers")
                own = b
                _rewrite_own(desc, b, position, path, options)
            mapping.append(self.add(key, desc, origin))
        self.layer_maps[layer] = mapping
        self.labels[layer] = origin

    def finalize(self, root: Node, version: int) -> list[BlobDesc]:
        """Point every chunk at its final blob index; the final blob table in order."""
        final: dict[int, int] = {}          # entry -> final index
        for node in nodes_with_chunks(root):
            mapping = self.layer_maps[node.layer]
            chunks = node.chunks
            changed = None
            for i, c in enumerate(chunks):
                if not 0 <= c.blob_index < len(mapping):
                    raise FormatError("chunk info", field="blob_index",
                                      expected=f"< {len(mapping)} (the source's blob count)",
                                      found=c.blob_index,
                                      hint=f"in {self.labels.get(node.layer, node.layer)}")
                entry = mapping[c.blob_index]
                index = final.get(entry)
                if index is None:
                    index = final[entry] = len(final)
                if index != c.blob_index:
                    if changed is None:
                        changed = list(chunks)
                    changed[i] = _with_blob(c, index)
            if changed is not None:
                node.chunks = changed
        order = sorted(final, key=final.__getitem__)
        table = [self.entries[e] for e in order]
        _check_ids(table, version)
        return [e.desc for e in table]


def _with_blob(c: ChunkInfo, index: int) -> ChunkInfo:
    """`c.replace(blob_index=index)`, spelled out: it runs once per chunk of the image."""
    return ChunkInfo(c.block_id, index, c.flags, c.compressed_size, c.uncompressed_size,
                     c.compressed_offset, c.uncompressed_offset, c.file_offset, c.index, c.crc32)


def _rewrite_own(desc: BlobDesc, blob: BlobInfo, i: int, path: str, options: MergeOptions) -> None:
    """Upstream's id rules for a layer's own blob: the original id or the file-name stem (the
    layer digest the caller named the file after), then --blob-digests overrides."""
    separate = bool(blob.features & BlobFeatures.SEPARATE)
    if not options.keep_blob_ids:
        if options.original_blob_ids is not None:
            desc.blob_id = strip_algo(options.original_blob_ids[i])
        else:
            desc.blob_id = name_stem(path)
    if options.blob_digests is not None:
        raw = digest_bytes("--blob-digests", options.blob_digests[i])
        if separate:
            desc.blob_meta_digest = raw
        else:
            desc.blob_id = raw.hex()
    if options.blob_sizes is not None:
        if separate:
            desc.blob_meta_size = options.blob_sizes[i]
        else:
            desc.compressed_size = options.blob_sizes[i]
    if options.blob_toc_digests is not None:
        desc.blob_toc_digest = digest_bytes("--blob-toc-digests", options.blob_toc_digests[i])
    if options.blob_toc_sizes is not None:
        desc.blob_toc_size = options.blob_toc_sizes[i]


def _check_ids(table: list[TableEntry], version: int) -> None:
    if version == 6 and len(table) > V6_MAX_BLOBS:
        raise MergeError(f"the merged image references {len(table)} blobs; RAFS v6 addresses "
                         f"at most {V6_MAX_BLOBS}")
    for e in table:
        raw = e.desc.blob_id.encode("utf-8", "surrogateescape")
        if not raw or b"\0" in raw:
            raise MergeError(f"{e.origin}: blob id {e.desc.blob_id!r} is empty or holds a NUL byte")
        if version == 6 and len(raw) > V6_MAX_BLOB_ID:
            raise MergeError(f"{e.origin}: blob id {e.desc.blob_id!r} is {len(raw)} bytes; RAFS v6 "
                             f"stores at most {V6_MAX_BLOB_ID} (name the source file after its "
                             f"digest, or pass --original-blob-ids / --blob-digests)")


def nodes_with_chunks(root: Node) -> Iterator[Node]:
    """Each regular file with chunks once, in upstream's walk order: a directory's children in
    name order, then its subdirectories depth-first (the order entries are numbered in)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        subdirs = []
        for _name, child in sorted(d.children.items()):  # type: ignore[union-attr]
            if child.children is not None:
                subdirs.append(child)
            elif child.chunks and id(child) not in seen:
                seen.add(id(child))
                yield child
        stack.extend(reversed(subdirs))
