"""Layers as explore sees them: what each one writes and removes, from OCI tars or Nydus layers.

Both kinds become the check oracle's `Changeset` (entries plus whiteouts, applied with OCI
rules), so provenance and change marks follow exactly the rules `check` proves images against.
A Nydus layer also keeps each regular file's chunks, for dedup and update-cost figures; its
content identity is the list of chunk digests, which needs no blob data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat

from ..check.oracle import FS_KINDS, Changeset, Node, clean, read_layer
from ..reader import Image, open_image
from ..tree.node import LOWER_LINK_XATTR



@dataclasses.dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk a file uses: its digest, sizes, and the blob that holds it."""

    digest: bytes
    uncompressed: int
    compressed: int
    blob: str


@dataclasses.dataclass(slots=True)
class LayerInput:
    """One layer, lowest first. Sizes are None where the source does not say."""

    name: str                                    # digest or file name, for people
    changeset: Changeset
    created_by: str | None = None
    source_size: int | None = None               # the OCI layer blob
    nydus_size: int | None = None                # the Nydus blob
    chunks: dict[int, tuple[ChunkRef, ...]] = dataclasses.field(default_factory=dict)  # id(Node) ->
    # Nydus layers read without their chunk lists (`fill_chunks` reads them): where to read
    # them, and the inode of each regular file's node
    chunk_source: tuple[str, tuple[str, ...]] | None = None
    unread: list[tuple[Node, int]] = dataclasses.field(default_factory=list)

    @property
    def nydus(self) -> bool:
        return self.nydus_size is not None


def from_oci_tar(path: str, name: str | None = None, created_by: str | None = None) -> LayerInput:
    """An OCI layer tar (plain, gzip or zstd): contents hashed with blake3 while streaming."""
    cs = read_layer(path, "blake3")
    return LayerInput(name or os.path.basename(path), cs, created_by, source_size=os.path.getsize(path))


def from_nydus_layer(path: str, name: str | None = None, created_by: str | None = None,
                     blob_dirs: tuple[str, ...] = (), chunks: bool = True) -> LayerInput:
    """A Nydus layer file or layer bootstrap: its entries, whiteout markers included (layer
    bootstraps keep them), with the chunks of every regular file (or, with `chunks` false,
    what `fill_chunks` needs to read them later from the same file)."""
    with open_image(path, list(blob_dirs)) as image:
        layer = image_changes(image, name or os.path.basename(path), created_by, chunks)
    if not chunks:
        layer.chunk_source = (path, blob_dirs)
    layer.nydus_size = os.path.getsize(path)
    return layer


def fill_chunks(layer: LayerInput) -> None:
    """The chunk lists (and chunk-based content identities) of a layer read without them."""
    if layer.chunk_source is None:
        return
    path, blob_dirs = layer.chunk_source
    with open_image(path, list(blob_dirs)) as image:
        for node, ino in layer.unread:
            _chunks(image, ino, node, layer)
    layer.chunk_source, layer.unread = None, []


def image_changes(image: Image, name: str, created_by: str | None = None,
                  chunks: bool = True) -> LayerInput:
    """The changeset a layer bootstrap stands for. Implied directories are not entries (they
    were not in the layer's tar); hard links after the first name are links; placeholders for
    links to lower-layer files are links to the path they name."""
    cs = Changeset(image.name)
    layer = LayerInput(name, cs, created_by)
    first: dict[object, tuple[bytes, ...]] = {}
    for path, ino in image.walk():
        if path == b"/":
            node = image.inode(ino)
            if not node.implicit:
                cs.add((), path, None, node=_node(image, ino, layer, chunks))
            continue
        inode = image.inode(ino)
        parts = clean(path)
        if inode.is_dir and inode.implicit:
            continue
        if not inode.is_dir:
            lower = image.getxattr(ino, LOWER_LINK_XATTR)
            if lower is not None:
                cs.add(parts, path, None, link=clean(lower))
                continue
            key = image.link_key(ino)
            if key in first:
                cs.add(parts, path, None, link=first[key])
                continue
            first[key] = parts
        cs.add(parts, path, None, node=_node(image, ino, layer, chunks))
    return layer


def _node(image: Image, ino: int, layer: LayerInput, chunks: bool) -> Node:
    node = node_of(image, ino)
    if node.kind == "file":
        if chunks:
            _chunks(image, ino, node, layer)
        else:
            layer.unread.append((node, ino))
    return node


def node_of(image: Image, ino: int) -> Node:
    """The oracle node of one inode of a bootstrap: kind and attributes (no chunks)."""
    n = image.inode(ino)
    kind = FS_KINDS.get(stat.S_IFMT(n.mode), "unknown")
    node = Node(kind, mode=stat.S_IMODE(n.mode), uid=n.uid, gid=n.gid,
                mtime_ns=n.mtime * 1_000_000_000 + n.mtime_nsec,
                xattrs={k: v for k, v in image.xattrs(ino) if k != LOWER_LINK_XATTR})
    if kind == "dir":
        node.children = {}
    elif kind == "symlink":
        node.target = image.readlink(ino)
    elif kind in ("char", "block"):
        node.rdev = (os.major(n.rdev), os.minor(n.rdev))
    elif kind == "file":
        node.size = n.size
    return node


def _chunks(image: Image, ino: int, node: Node, layer: LayerInput) -> None:
    """A file's chunks, and its content identity: the digest of its size and chunk digests."""
    refs = tuple(ChunkRef(c.block_id, c.uncompressed_size, c.compressed_size,
                          image.blob_of(c).blob_id) for c in image.chunks(ino))
    layer.chunks[id(node)] = refs
    h = hashlib.blake2b(node.size.to_bytes(8, "little"), digest_size=32)
    for r in refs:
        h.update(r.digest)
    node.digest = b"chunks:" + h.digest()
