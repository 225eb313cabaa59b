"""What the browser shows while an image's layers are still being read.

A Nydus image's merged bootstrap is its final tree: `Preview` lists it directory by directory
as the browser expands them, without reading a layer. `Loading` answers the browser's
questions meanwhile: the merged view from the preview (or from the layers applied so far),
each layer's view once that layer is in.
"""

from __future__ import annotations

import fnmatch
import os
import stat

from ..check.oracle import FS_KINDS
from ..errors import NydusfsError
from ..reader import Image
from .browse import MERGED, Browser, Item, attribute_lines
from .layers import node_of

PENDING = ("pending", "the layers are being read: marks, provenance and sizes follow")


class Preview:
    """The final tree of a Nydus image from its merged bootstrap alone (no marks, no
    provenance: the merge removed the whiteouts and the lower versions)."""

    def __init__(self, image: Image) -> None:
        self.image = image

    def _ino(self, path: bytes) -> int | None:
        try:
            return self.image.resolve(path)
        except NydusfsError:
            return None

    def children(self, path: bytes, by_size: bool = False) -> list[Item]:
        ino = self._ino(path)
        items: list[Item] = []
        base = b"" if path == b"/" else path
        try:
            if ino is None or not self.image.inode(ino).is_dir:
                return []
            for name, child in self.image.readdir(ino):
                inode = self.image.inode(child)
                kind = FS_KINDS.get(stat.S_IFMT(inode.mode), "unknown")
                items.append(Item(name, base + b"/" + name, kind, inode.size if kind == "file" else None,
                                  None, None))
        except NydusfsError:        # a damaged bootstrap: reading the layers will say where
            return items
        items.sort(key=(lambda i: (-(i.size or 0), i.name)) if by_size else (lambda i: i.name))
        return items

    def details(self, path: bytes) -> list[tuple[str, str]]:
        out = [("path", os.fsdecode(path))]
        ino = self._ino(path)
        if ino is None:
            return out + [("in the image", "no"), PENDING]
        return out + attribute_lines(node_of(self.image, ino)) + [PENDING]

    def search(self, pattern: str, limit: int = 1000) -> list[bytes]:
        pat = os.fsencode(pattern)
        hits = sorted(p for p, _ in self.image.walk()
                      if fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p.rsplit(b"/", 1)[-1], pat))
        return hits[:limit]


class Loading:
    """The browser's model until every layer is in: `browser` is over the layers applied so
    far (its analysis grows as they come), `preview` (a Nydus image) shows the merged view."""

    def __init__(self, browser: Browser, preview: Preview | None) -> None:
        self.browser = browser
        self.preview = preview

    def _read(self, view: int) -> bool:
        return view < len(self.browser.a.layers)

    def children(self, view: int, path: bytes, changes_only: bool = False,
                 by_size: bool = False) -> list[Item]:
        if view == MERGED and self.preview is not None:
            return [] if changes_only else self.preview.children(path, by_size)
        if view != MERGED and not self._read(view):
            return []
        return self.browser.children(view, path, changes_only, by_size)

    def details(self, path: bytes) -> list[tuple[str, str]]:
        if self.preview is not None:
            return self.preview.details(path)
        # the layers so far: what a later layer may still change is left out
        out = self.browser.details(path)
        return [line for line in out if line[0] not in ("pending", "written by", "in the image")] + [PENDING]

    def search(self, view: int, pattern: str, limit: int = 1000) -> list[bytes]:
        if view == MERGED and self.preview is not None:
            return self.preview.search(pattern, limit)
        if view != MERGED and not self._read(view):
            return []
        return self.browser.search(view, pattern, limit)
