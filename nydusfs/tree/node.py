"""The in-memory filesystem tree shared by create and merge.

A directory maps names (bytes) to nodes. A hard link is the *same* Node object under several
names, so nlink is simply the number of references, a link group split by an upper layer keeps
its surviving names together, and nodes of different layers can never be fused by accident.
"""

from __future__ import annotations

import dataclasses
import stat
from typing import Iterator

from ..format.blob import DEFAULT_CHUNK_SIZE
from ..format.choices import Compressor, Digester
from ..format.v5 import ChunkInfo
from ..util.modes import FileKind

# A hard link whose target is not in its own layer (a file of a lower layer) cannot be resolved
# by `create`; it is stored as an empty file carrying this private xattr (value: the target path
# as written in the tar), and `merge` turns it into a second name of the lower file.
LOWER_LINK_XATTR = b"trusted.nydusfs.lowerlink"

# Whiteout markers of a layer whose directory the same layer then replaced by a non-directory
# cannot stay in the tree, yet they still hide lower files from the layer's hard links (OCI
# applies a layer's whiteouts before its entries). `create` keeps their paths in this private
# xattr of the layer's root (NUL-separated); `merge` applies them with the other markers.
HIDDEN_MARKERS_XATTR = b"trusted.nydusfs.whiteouts"


class _EmptyXattrs(dict[bytes, bytes]):
    pass


class _EmptyChunks(list[ChunkInfo]):
    pass


def _refuse(self: object, *args: object, **kwargs: object) -> None:
    raise TypeError("a shared empty value of a tree: assign a new one instead")


for _kind, _mutators in ((_EmptyXattrs, "__setitem__ __delitem__ update setdefault pop popitem clear __ior__"),
                         (_EmptyChunks, "__setitem__ __delitem__ append extend insert remove pop clear sort "
                                        "reverse __iadd__ __imul__")):
    for _name in _mutators.split():
        setattr(_kind, _name, _refuse)

# Most entries have no xattrs and many files no data: they share one empty dict and one empty
# list instead of 120 bytes of their own each (a million entries, docs/limits.md). Mutating
# them raises; code that changes a node's xattrs or chunks assigns new ones.
NO_XATTRS: dict[bytes, bytes] = _EmptyXattrs()
NO_CHUNKS: list[ChunkInfo] = _EmptyChunks()


@dataclasses.dataclass(slots=True, eq=False)
class Node(FileKind):
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    rdev: int = 0                                   # Linux dev_t (char/block devices)
    size: int = 0                                   # regular files; others are derived
    symlink: bytes | None = None
    xattrs: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    chunks: list[ChunkInfo] = dataclasses.field(default_factory=list)
    children: dict[bytes, "Node"] | None = None     # directories only
    layer: int = 0                                  # index of the layer the node came from
    implicit: bool = False                          # directory only implied by its children

    def sorted_children(self) -> list[tuple[bytes, "Node"]]:
        assert self.children is not None
        return sorted(self.children.items())


def new_dir(mode: int = 0o755, **kw: object) -> Node:
    return Node(mode=stat.S_IFDIR | (mode & 0o7777), children={}, **kw)  # type: ignore[arg-type]


@dataclasses.dataclass(slots=True)
class BlobDesc:
    """One entry of a bootstrap's blob table (all the per-blob fields v5 and v6 record)."""

    blob_id: str
    compressor: str = Compressor.NONE
    digester: str = Digester.BLAKE3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_count: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    features: int = 0
    readahead_offset: int = 0
    readahead_size: int = 0
    # RAFS v6 blob-table-only fields
    ci_compressor: int = 0
    ci_offset: int = 0
    ci_compressed_size: int = 0
    ci_uncompressed_size: int = 0
    blob_toc_size: int = 0
    blob_toc_digest: bytes = bytes(32)
    blob_meta_digest: bytes = bytes(32)
    blob_meta_size: int = 0


@dataclasses.dataclass(slots=True)
class Tree:
    root: Node
    version: int = 6
    compressor: str = Compressor.ZSTD
    digester: str = Digester.BLAKE3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    explicit_uid_gid: bool = True
    blobs: list[BlobDesc] = dataclasses.field(default_factory=list)
    prefetch: list[bytes] = dataclasses.field(default_factory=list)   # absolute paths
    extra_flags: int = 0           # superblock bits beyond compressor/digester/uid/xattr

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """(path, node) in DFS pre-order with name-sorted children; the root is b'/'."""
        stack: list[tuple[bytes, Node]] = [(b"/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.children:
                base = b"" if path == b"/" else path
                for name, child in reversed(node.sorted_children()):
                    stack.append((base + b"/" + name, child))

    def lookup(self, path: bytes) -> Node | None:
        node = self.root
        for part in split_path(path):
            if node.children is None:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node


def split_path(path: bytes) -> list[bytes]:
    return [p for p in path.split(b"/") if p and p != b"."]


def non_directories(root: Node) -> Iterator[Node]:
    """Every non-directory node below `root`, once per name (a hard link comes up once per
    name; callers that want each inode once keep a set of ids)."""
    stack = [root]
    while stack:
        node = stack.pop()
        for child in (node.children or {}).values():
            if child.is_dir:
                stack.append(child)
            else:
                yield child


def count_links(root: Node) -> dict[int, int]:
    """Number of names of each non-directory node, keyed by id(node)."""
    counts: dict[int, int] = {}
    for child in non_directories(root):
        counts[id(child)] = counts.get(id(child), 0) + 1
    return counts
