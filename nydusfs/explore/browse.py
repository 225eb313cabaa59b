"""The browser's model, without any UI: the entries of a directory in one view (the merged
image, or one layer's changes), details of a path, search by glob, sort by size.

Kept apart from the Textual app so that what it shows can be tested directly and the app
stays a thin layer of widgets."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import stat
import time
from typing import Iterator

from ..check.oracle import FS_KINDS, Node
from .analysis import WRITES, Analysis, Change

MERGED = -1          # the view of the final image; other views are layer indexes


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    name: bytes
    path: bytes
    kind: str
    size: int            # files: bytes; directories: bytes of the files below (in this view)
    mark: str | None     # layer view: the change; merged view: how the visible version came
    layer: int | None    # merged view: the layer that wrote the visible version

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def _parent(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[0] or b"/"


def _join(parent: bytes, name: bytes) -> bytes:
    return (b"" if parent == b"/" else parent) + b"/" + name


class Browser:
    def __init__(self, analysis: Analysis) -> None:
        self.a = analysis
        self._layer_index: dict[int, dict[bytes, list[Change]]] = {}
        self._sizes: dict[tuple[int, bytes], int] = {}
        self._layer_totals: dict[int, dict[bytes, int]] = {}
        self._links: dict[int, list[bytes]] | None = None
        self._chunk_users: dict[bytes, list[bytes]] | None = None

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
        items.sort(key=(lambda i: (-i.size, i.name)) if by_size else (lambda i: i.name))
        return items

    def _visible(self, path: bytes) -> tuple[str | None, int | None]:
        for v in reversed(self.a.provenance.get(path, [])):
            if v.mark in WRITES:
                return v.mark, v.layer
        return None, None

    def size(self, view: int, path: bytes, node: Node | None = None) -> int:
        key = (view, path)
        got = self._sizes.get(key)
        if got is not None:
            return got
        if view == MERGED:
            node = node if node is not None else self.node(path)
            total = 0
            seen: set[int] = set()
            stack = [node] if node is not None else []
            while stack:                       # a hard-linked file counts once per directory
                n = stack.pop()
                if n.kind == "file" and id(n) not in seen:
                    seen.add(id(n))
                    total += n.size
                stack.extend((n.children or {}).values())
        else:
            total = self._layer_sizes(view).get(path, 0)
        self._sizes[key] = total
        return total

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
            yield from sorted(self.a.final)
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
        if node.kind != "dir":
            others = [p for p in self._link_group(node) if p != path]
            if others:
                out.append(("hard links", ", ".join(os.fsdecode(p) for p in others)))
        refs = self.a.chunks.get(id(node))
        if refs is not None:
            blobs = sorted({r.blob for r in refs})
            out.append(("chunks", f"{len(refs)} in blob{'s' if len(blobs) > 1 else ''} {', '.join(blobs)}"))
            sharing = sorted({p for r in refs for p in self._users(r.digest) if p != path})
            if sharing:
                out.append(("shares chunks with", ", ".join(os.fsdecode(p) for p in sharing[:20])
                            + (f" and {len(sharing) - 20} more" if len(sharing) > 20 else "")))
        return out

    def _link_group(self, node: Node) -> list[bytes]:
        if self._links is None:
            self._links = {}
            for p, seen in self.a.final.items():
                if seen.kind != "dir":
                    self._links.setdefault(seen.node, []).append(p)
        return self._links.get(id(node), [])

    def _users(self, digest: bytes) -> list[bytes]:
        if self._chunk_users is None:
            self._chunk_users = {}
            for p, seen in self.a.final.items():
                for r in self.a.chunks.get(seen.node, ()):
                    self._chunk_users.setdefault(r.digest, []).append(p)
        return self._chunk_users.get(digest, [])


_TYPE_BITS = {kind: bits for bits, kind in FS_KINDS.items()}


def _type_bits(kind: str) -> int:
    return _TYPE_BITS.get(kind, 0)
