"""Load a reader Image into a Tree (merge sources, parent bootstraps, chunk dicts, round trips)."""

from __future__ import annotations

import stat

from ..errors import FormatError
from ..format.flags import BlobFeatures, SuperFlags
from ..reader import Image
from ..reader.model import BlobInfo
from ..util.limits import MAX_PATH
from .node import NO_CHUNKS, NO_XATTRS, BlobDesc, Node, Tree


def blob_desc(b: BlobInfo) -> BlobDesc:
    """The blob-table entry of a blob re-listed in another bootstrap (merge, chunk dict, parent).

    Its id is the resolved one, so INLINED_FS_META is cleared, as upstream does for blobs taken
    from a parent or a dict: that flag tells readers to take the id from the file name, which
    is only right in the layer file that holds the blob."""
    features = b.features & ~BlobFeatures.V5_NO_EXT_BLOB_TABLE
    if not features & BlobFeatures.SEPARATE:
        features &= ~BlobFeatures.INLINED_FS_META
    d = BlobDesc(blob_id=b.blob_id, compressor=b.compressor, digester=b.digester,
                 chunk_size=b.chunk_size, chunk_count=b.chunk_count,
                 compressed_size=b.compressed_size, uncompressed_size=b.uncompressed_size,
                 features=int(features), readahead_offset=b.readahead_offset,
                 readahead_size=b.readahead_size)
    if b.v6 is not None:
        e = b.v6
        d.ci_compressor, d.ci_offset = e.ci_compressor, e.ci_offset
        d.ci_compressed_size, d.ci_uncompressed_size = e.ci_compressed_size, e.ci_uncompressed_size
        d.blob_toc_size, d.blob_toc_digest = e.blob_toc_size, e.blob_toc_digest
        d.blob_meta_digest, d.blob_meta_size = e.blob_meta_digest, e.blob_meta_size
    return d


def load_tree(image: Image, layer: int = 0) -> Tree:
    """Every entry of the image as Nodes; hard links (same inode number) become one Node."""
    by_key: dict[object, Node] = {}

    def make(ino: int) -> Node:
        n = image.inode(ino)
        node = Node(mode=n.mode, uid=n.uid, gid=n.gid, mtime=n.mtime, mtime_nsec=n.mtime_nsec,
                    rdev=n.rdev, size=n.size if n.is_reg else 0,
                    xattrs=dict(image.xattrs(ino)) or NO_XATTRS, layer=layer, implicit=n.implicit)
        if n.is_dir:
            node.children = {}
        elif n.is_symlink:
            node.symlink = image.readlink(ino)
        elif n.is_reg:
            node.chunks = list(image.chunks(ino)) or NO_CHUNKS
        return node

    root = make(image.root_ino)
    stack = [(image.root_ino, root, 0)]    # (ino, node, bytes of its path without the root '/')
    seen = {image.root_ino}  # a directory has one parent: a corrupt image must not loop us
    names, most = 1, image.max_names()
    while stack:
        ino, node, length = stack.pop()
        assert node.children is not None
        for name, child_ino in image.list_dir(ino):   # uncached: each directory is read once
            child_attr = image.inode(child_ino)
            names += 1
            if length + 1 + len(name) > MAX_PATH or names > most:
                raise FormatError("directory tree", field="path" if names <= most else "dirent",
                                  offset=child_attr.offset, file=image.name,
                                  expected=f"paths of at most {MAX_PATH} bytes (PATH_MAX) and at "
                                  f"most {most} names", found=f"{length + 1 + len(name)} bytes, "
                                  f"{names} names")
            if stat.S_ISDIR(child_attr.mode):
                if child_ino in seen:
                    raise FormatError("directory tree", field="dirent", offset=child_attr.offset,
                                      expected="each directory under one parent",
                                      found=f"inode {child_ino} again", file=image.name)
                seen.add(child_ino)
                child = make(child_ino)
                stack.append((child_ino, child, length + 1 + len(name)))
            else:
                key = image.link_key(child_ino)
                linked = by_key.get(key)
                if linked is None:
                    linked = by_key[key] = make(child_ino)
                child = linked
            node.children[name] = child
    known = (SuperFlags.COMPRESSION_NONE | SuperFlags.COMPRESSION_LZ4 | SuperFlags.COMPRESSION_GZIP
             | SuperFlags.COMPRESSION_ZSTD | SuperFlags.HASH_BLAKE3 | SuperFlags.HASH_SHA256
             | SuperFlags.EXPLICIT_UID_GID | SuperFlags.HAS_XATTR)
    return Tree(root=root, version=image.version, compressor=image.compressor,
                digester=image.digester, chunk_size=image.chunk_size,
                explicit_uid_gid=bool(image.flags & SuperFlags.EXPLICIT_UID_GID),
                blobs=[blob_desc(b) for b in image.blobs], prefetch=[],
                extra_flags=image.flags & ~known)
