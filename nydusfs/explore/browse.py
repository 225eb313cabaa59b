"""The browser's model, without any UI: the entries of a directory in one view (the merged
image, or one layer's changes), details of a path, search by glob, sort by size.

Kept apart from the Textual app so that what it shows can be tested directly and the app
stays a thin layer of widgets."""

from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import os
import stat
import time
from typing import Iterator

from ..check.oracle import FS_KINDS, Node
from .analysis import WRITES, Analysis, Change
from .layers import ChunkRef

MERGED = -1          # the view of the final image; other views are layer indexes
SHOWN = 20           # files named in "shares chunks with"
COUNTED = 1000       # files counted there


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    name: bytes
    path: bytes
    kind: str
    size: int | None     # files: bytes; directories: bytes of the files below (in this view),
                         # None until the index is built
    mark: str | None     # layer view: the change; merged view: how the visible version came
    layer: int | None    # merged view: the layer that wrote the visible version

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def _parent(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[0] or b"/"


def _join(parent: bytes, name: bytes) -> bytes:
    return (b"" if parent == b"/" else parent) + b"/" + name


@dataclasses.dataclass(slots=True)
class Index:
    """What the browser looks up on every key press, built in one pass each over the image so
    that a key press costs what the rows it shows cost, not what the image holds."""

    sizes: dict[bytes, int]                      # merged view: directory -> file bytes below
    links: dict[int, list[bytes]]                # id(node) -> its names, nodes with two or more
    chunk_users: dict[bytes, list[bytes]]        # chunk digest -> visible files using it
    paths: list[bytes]                           # the merged view's paths, sorted (search)


def build_index(a: Analysis) -> Index:
    names: dict[int, list[bytes]] = {}
    for p, seen in a.final.items():
        if seen.kind != "dir":
            names.setdefault(seen.node, []).append(p)
    links = {k: sorted(v) for k, v in names.items() if len(v) > 1}
    users: dict[bytes, list[bytes]] = {}
    for node, refs in a.chunks.items():
        for p in names.get(node, ()):
            for r in refs:
                got = users.setdefault(r.digest, [])
                if not got or got[-1] != p:
                    got.append(p)
    return Index(_dir_sizes(a.root, links), links, users, sorted(a.final))


def _dir_sizes(root: Node, links: dict[int, list[bytes]]) -> dict[bytes, int]:
    """Bytes of the regular files below each directory, post-order in one pass; a file with
    several names counts once per directory (such files are few: their ids go up in a set)."""
    sizes: dict[bytes, int] = {}
    linked_size: dict[int, int] = {}
    sums: dict[bytes, tuple[int, set[int]]] = {}
    # (path, node, children summed): a directory is summed after its children
    stack: list[tuple[bytes, Node, bool]] = [(b"/", root, False)]
    while stack:
        path, node, done = stack.pop()
        children = node.children or {}
        if not done:
            stack.append((path, node, True))
            stack.extend((_join(path, name), child, False) for name, child in children.items()
                         if child.kind == "dir")
            continue
        total, linked = 0, set()
        for name, child in children.items():
            if child.kind == "dir":
                sub, sub_linked = sums.pop(_join(path, name))
                total += sub
                linked |= sub_linked
            elif child.kind == "file":
                if id(child) in links:
                    linked.add(id(child))
                    linked_size[id(child)] = child.size
                else:
                    total += child.size
        sums[path] = (total, linked)
        sizes[path] = total + sum(linked_size[n] for n in linked)
    return sizes


class Browser:
    def __init__(self, analysis: Analysis) -> None:
        self.a = analysis
        self.index: Index | None = None          # built by `prepare`, in the background
        self._layer_index: dict[int, dict[bytes, list[Change]]] = {}
        self._layer_totals: dict[int, dict[bytes, int]] = {}

    def prepare(self) -> Index:
        """Build the index (and each layer's), once the analysis is complete; meant for a
        worker thread: the index is published in one assignment."""
        if self.index is None:
            for layer in range(len(self.a.layers)):
                self._changes(layer)
                self._layer_sizes(layer)
            self.index = build_index(self.a)
        return self.index

    # --- views ----------------------------------------------------------------------------------
    def node(self, path: bytes) -> Node | None:
        """The final image's node at `path` (None: not in the image)."""
        n: Node | None = self.a.root
        for part in path.split(b"/"):
            if not part:
                continue
            if n is None or not n.children:
                return None
            n = n.children.get(part)
        return n

    def _changes(self, layer: int) -> dict[bytes, list[Change]]:
        """parent directory -> changes of `layer` directly inside it (parents implied)."""
        idx = self._layer_index.get(layer)
        if idx is None:
            idx = {}
            seen: set[bytes] = set()
            for c in self.a.layers[layer].changes:
                if c.path == b"/":
                    continue
                idx.setdefault(_parent(c.path), []).append(c)
                seen.add(c.path)
            for c in list(self.a.layers[layer].changes):   # directories only implied by changes
                p = _parent(c.path)
                while p != b"/" and p not in seen:
                    seen.add(p)
                    idx.setdefault(_parent(p), []).append(Change(p, "", "dir", 0))
                    p = _parent(p)
            self._layer_index[layer] = idx
        return idx

    def children(self, view: int, path: bytes, changes_only: bool = False,
                 by_size: bool = False) -> list[Item]:
        """The entries of one directory in one view, sorted: what expanding it shows."""
        items: list[Item] = []
        if view == MERGED:
            node = self.node(path)
            for name, child in (node.children or {}).items() if node is not None else ():
                p = _join(path, name)
                mark, layer = self._visible(p)
                if changes_only and layer is None:
                    continue
                items.append(Item(name, p, child.kind, self.size(view, p, child), mark, layer))
        else:
            for c in self._changes(view).get(path, []):
                name = c.path.rsplit(b"/", 1)[1]
                size = c.size if c.kind == "file" else self.size(view, c.path)
                items.append(Item(name, c.path, c.kind, size, c.mark or None, view))
        items.sort(key=(lambda i: (-(i.size or 0), i.name)) if by_size else (lambda i: i.name))
        return items

    def _visible(self, path: bytes) -> tuple[str | None, int | None]:
        for v in reversed(self.a.provenance.get(path, [])):
            if v.mark in WRITES:
                return v.mark, v.layer
        return None, None

    def size(self, view: int, path: bytes, node: Node | None = None) -> int | None:
        """A file's bytes; a directory's file bytes below it in the view (None in the merged
        view until the index is built: the sum is a walk of the whole subtree)."""
        if view != MERGED:
            return self._layer_sizes(view).get(path, 0)
        node = node if node is not None else self.node(path)
        if node is None:
            return 0
        if node.kind != "dir":
            return node.size
        return self.index.sizes.get(path, 0) if self.index is not None else None

    def _layer_sizes(self, layer: int) -> dict[bytes, int]:
        """path -> bytes of the files the layer writes at or below it, in one pass."""
        sizes = self._layer_totals.get(layer)
        if sizes is None:
            sizes = {}
            for c in self.a.layers[layer].changes:
                if c.kind == "file" and c.mark in WRITES:
                    p = c.path
                    while True:
                        sizes[p] = sizes.get(p, 0) + c.size
                        if p == b"/":
                            break
                        p = _parent(p)
            self._layer_totals[layer] = sizes
        return sizes

    def search(self, view: int, pattern: str, limit: int = 1000) -> list[bytes]:
        """Paths of the view whose path (or name) matches the glob, in path order."""
        pat = os.fsencode(pattern)
        out = []
        for p in self._paths(view):
            if fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p.rsplit(b"/", 1)[-1], pat):
                out.append(p)
                if len(out) >= limit:
                    break
        return out

    def _paths(self, view: int) -> Iterator[bytes]:
        if view == MERGED:
            yield from (self.index.paths if self.index is not None else sorted(self.a.final))
        else:
            yield from (c.path for c in self.a.layers[view].changes)

    # --- details --------------------------------------------------------------------------------
    def details(self, path: bytes) -> list[tuple[str, str]]:
        """(label, value) lines about `path`: history, attributes, links, chunks. Values are
        plain text from the image: the UI escapes them."""
        out: list[tuple[str, str]] = [("path", os.fsdecode(path))]
        history = self.a.provenance.get(path, [])
        node = self.node(path)
        writer = self.a.writer(path)
        if node is None:
            out.append(("in the image", "no"))
        elif writer is None:
            out.append(("written by", "no layer (a directory implied by its children)"))
        else:
            out.append(("written by", f"layer {writer} ({self.a.layers[writer].name})"))
        for v in history:
            out.append((f"layer {v.layer}", f"{v.mark} ({v.kind}{', %d bytes' % v.size if v.kind == 'file' else ''})"))
        if node is None:
            return out
        out.extend(attribute_lines(node))
        index = self.index
        if node.kind != "dir" and index is not None:
            others = [p for p in index.links.get(id(node), ()) if p != path]
            if others:
                out.append(("hard links", ", ".join(os.fsdecode(p) for p in others)))
        refs = self.a.chunks.get(id(node))
        if refs is not None:
            blobs = sorted({r.blob for r in refs})
            out.append(("chunks", f"{len(refs)} in blob{'s' if len(blobs) > 1 else ''} {', '.join(blobs)}"))
            if index is not None:
                out.extend(self._sharing(index, path, refs))
        if index is None or not self.a.complete:
            out.append(("pending", "hard links, shared chunks, sizes and waste are being computed"))
        return out

    def _sharing(self, index: Index, path: bytes, refs: tuple[ChunkRef, ...]) -> list[tuple[str, str]]:
        """The other files that use one of these chunks: the first SHOWN by path, and how many
        (counted up to COUNTED: a chunk thousands of files share must not cost thousands of
        steps per key press)."""
        others: set[bytes] = set()
        for r in refs:
            for p in index.chunk_users.get(r.digest, ()):
                if p != path:
                    others.add(p)
                    if len(others) > COUNTED:
                        break
            if len(others) > COUNTED:
                break
        if not others:
            return []
        first = heapq.nsmallest(SHOWN, others)
        more = ""
        if len(others) > COUNTED:
            more = f" and more than {COUNTED - SHOWN} more"
        elif len(others) > SHOWN:
            more = f" and {len(others) - SHOWN} more"
        return [("shares chunks with", ", ".join(os.fsdecode(p) for p in first) + more)]


def attribute_lines(node: Node) -> list[tuple[str, str]]:
    """(label, value) lines of a node's attributes, for the details pane."""
    out = []
    if node.mode is not None:
        out.append(("mode", f"{stat.filemode(_type_bits(node.kind) | node.mode)} {node.mode:04o}"))
    if node.uid is not None:
        out.append(("owner", f"{node.uid}:{node.gid}"))
    if node.kind == "file":
        out.append(("size", str(node.size)))
    if node.mtime_ns is not None:
        secs, ns = divmod(node.mtime_ns, 1_000_000_000)
        out.append(("mtime", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{ns:09d} UTC"))
    if node.target is not None:
        out.append(("target", os.fsdecode(node.target)))
    if node.rdev is not None:
        out.append(("device", f"{node.rdev[0]}:{node.rdev[1]}"))
    for name, value in sorted((node.xattrs or {}).items()):
        out.append((f"xattr {os.fsdecode(name)}", os.fsdecode(value)))
    return out


_TYPE_BITS = {kind: bits for bits, kind in FS_KINDS.items()}


def _type_bits(kind: str) -> int:
    return _TYPE_BITS.get(kind, 0)
