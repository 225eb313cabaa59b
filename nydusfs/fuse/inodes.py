"""Inode numbers as FUSE sees them, stable for the life of a mount.

The reader numbers inodes by RAFS v5 inode number (root 1) or RAFS v6 nid (root usually 128,
as the kernel's erofs shows it). FUSE wants the root at 1 and never uses 0, so the map swaps
the root with 1 and keeps every other number as it is; nid 0 (possible in v6 when the root
is elsewhere) moves to a number no reader inode can have.

Hard links: current builders give every name of a hard-linked file one inode; older RAFS v6
builders wrote one inode per name that share `i_ino`. `canonical()` folds such names onto the
first inode seen, so hard-linked paths always show one inode number.
"""

from __future__ import annotations

from typing import Any

SPARE = 1 << 62      # above any nid a bootstrap can address (its size / 32)


class InodeMap:
    """Reader inode <-> FUSE inode, plus the parent of every directory handed out.

    Only used from the trio thread, so the dicts need no lock.
    """

    def __init__(self, image: Any) -> None:
        self.image = image
        self.root = image.root_ino
        self._canon: dict[object, int] = {}
        self._parent: dict[int, int] = {self.root: self.root}

    # --- numbering -------------------------------------------------------------------------
    def to_fuse(self, ino: int) -> int:
        if ino == self.root:
            return 1
        if ino == 1:
            return SPARE if self.root == 0 else self.root
        if ino == 0:
            return SPARE
        return ino

    def to_reader(self, fuse_ino: int) -> int:
        if fuse_ino == 1:
            return self.root
        if fuse_ino == SPARE:
            return 1 if self.root == 0 else 0
        if fuse_ino == self.root:
            return 1
        return fuse_ino

    # --- identity --------------------------------------------------------------------------
    def canonical(self, ino: int) -> int:
        """The one reader inode that stands for every name of a hard-linked file."""
        node = self.image.inode(ino)
        if node.nlink < 2 or node.is_dir:
            return ino
        return self._canon.setdefault(self.image.link_key(ino), ino)

    def child(self, parent: int, ino: int) -> int:
        """Canonical inode of an entry of `parent`; directories remember their parent.

        `canonical()` inlined: every entry of every listing comes through here."""
        node = self.image.inode(ino)
        if node.is_dir:
            self._parent.setdefault(ino, parent)
            return ino
        if node.nlink < 2:
            return ino
        return self._canon.setdefault(self.image.link_key(ino), ino)

    def parent(self, ino: int) -> int:
        """Parent of a directory handed out before (the root is its own parent)."""
        return self._parent.get(ino, self.root)
