"""Turn the entries of one layer tar into a Tree, with the semantics of extracting the tar.

- Paths: `./` prefixes and repeated slashes are dropped; absolute paths and `..` components
  are refused (a layer must not reach outside its root).
- Parents missing from the tar are created as *implicit* directories (0755, root, mtime 0) and
  marked so, so that a merge keeps the lower layer's real metadata for them.
- A parent component that is a symlink created earlier in this layer is followed, as
  extracting the tar onto a filesystem would (`lib -> usr/lib` then `lib/x` lands in usr/lib).
- Duplicates: the last entry wins; a directory entry over an existing directory updates its
  attributes and keeps its children.
- Hard links share the Node of their target, which must be an earlier non-directory entry of
  this layer.
"""

from __future__ import annotations

import os
import stat
from typing import Callable

from ..errors import LayerError, ParentNotADirError
from ..format import v6, whiteout
from ..tree.node import LOWER_LINK_XATTR, Node, new_dir, split_path
from ..tree.paths import LOOP, TOO_LONG, walk
from ..util.limits import MAX_PATH
from .tarstream import Entry
TYPE_MODE = {
    b"0": stat.S_IFREG, b"\0": stat.S_IFREG, b"7": stat.S_IFREG, b"2": stat.S_IFLNK,
    b"3": stat.S_IFCHR, b"4": stat.S_IFBLK, b"5": stat.S_IFDIR, b"6": stat.S_IFIFO,
}


def clean_parts(raw: bytes, source: str, entry: Entry, what: str = "path") -> list[bytes]:
    if raw.startswith(b"/"):
        raise LayerError(source, f"absolute {what} {raw[:200]!r} is not allowed in a layer",
                         member=entry.name, offset=entry.offset)
    parts = split_path(raw)
    if sum(map(len, parts)) + len(parts) > MAX_PATH:
        raise LayerError(source, f"{what} longer than {MAX_PATH} bytes (PATH_MAX)",
                         member=entry.name[:200], offset=entry.offset)
    if b".." in parts:
        raise LayerError(source, f"{what} {raw[:200]!r} has a '..' component",
                         member=entry.name, offset=entry.offset)
    for p in parts:
        if len(p) > 255:
            raise LayerError(source, f"name component of {len(p)} bytes in {what} (the limit is 255)",
                             member=entry.name, offset=entry.offset)
    return parts


def storable_xattrs(xattrs: dict[bytes, bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Xattrs RAFS can keep (user., trusted., security., POSIX ACLs), and the dropped names."""
    kept, dropped = {}, []
    for name, value in xattrs.items():
        try:
            v6.split_xattr_name(name)
        except ValueError:
            dropped.append(name)
            continue
        if len(value) > 0xFFFF:
            dropped.append(name)
            continue
        kept[name] = value
    return kept, dropped


class LayerTree:
    def __init__(self, source: str, warn: Callable[[str], None] = lambda m: None) -> None:
        self.source = source
        self.warn = warn
        self.root = new_dir(0o755, implicit=True)
        self.dropped_xattrs: dict[bytes, int] = {}
        self.lower_links: dict[bytes, Node] = {}

    # --- paths ----------------------------------------------------------------------------
    def _parent(self, parts: list[bytes], entry: Entry) -> Node:
        """The directory that will hold parts[-1], creating implicit directories on the way and
        following symlinks of this layer; '..' from symlink targets is clamped at the root."""
        found = walk(self.root, parts[:-1], create=True, max_path=MAX_PATH)
        if found.failure == LOOP:
            raise LayerError(self.source, "too many levels of symbolic links in the path",
                             member=entry.name, offset=entry.offset)
        if found.failure == TOO_LONG:
            raise LayerError(self.source, f"the path resolves (through symlinks) to more than "
                             f"{MAX_PATH} bytes (PATH_MAX)", member=entry.name[:200],
                             offset=entry.offset)
        if found.node is None:
            raise ParentNotADirError(self.source, f"parent {b'/'.join(found.failed_at)!r} is "
                                     "not a directory", member=entry.name, offset=entry.offset)
        return found.node

    def lookup(self, parts: list[bytes]) -> Node | None:
        node = self.root
        for p in parts:
            if node.children is None or p not in node.children:
                return None
            node = node.children[p]
        return node

    # --- entries --------------------------------------------------------------------------
    def add(self, entry: Entry, chunks: list | None = None) -> Node | None:
        parts = clean_parts(entry.name, self.source, entry)
        xattrs, dropped = storable_xattrs(entry.xattrs)
        for name in dropped:
            self.dropped_xattrs[name] = self.dropped_xattrs.get(name, 0) + 1
        if not parts:  # the root itself ("./")
            if entry.type != b"5":
                raise LayerError(self.source, "the layer root must be a directory",
                                 member=entry.name, offset=entry.offset)
            self._set_attrs(self.root, entry, xattrs)
            self.root.implicit = False
            return self.root
        try:
            parent = self._parent(parts, entry)
        except ParentNotADirError:
            if not parts[-1].startswith(whiteout.PREFIX):
                raise
            # a whiteout below a path this layer turned into a file: the file already hides
            # everything the lower layers had there, so the marker has nothing left to do
            self.warn(f"whiteout {os.fsdecode(entry.name)!r} sits below a non-directory of this "
                      "layer; dropped (the lower entries are hidden by that file anyway)")
            return None
        name = parts[-1]
        assert parent.children is not None
        existing = parent.children.get(name)
        if entry.type == b"1":
            target_parts = clean_parts(entry.linkname, self.source, entry, "hard link target")
            target = self.lookup(target_parts)
            if target is None:
                target = self._lower_link(entry, target_parts, xattrs)
            if target.is_dir:
                raise LayerError(self.source, f"hard link to directory {entry.linkname[:200]!r}",
                                 member=entry.name, offset=entry.offset)
            if existing is not target:
                parent.children[name] = target
            return target
        if entry.type == b"5":
            if existing is not None and existing.is_dir:
                self._set_attrs(existing, entry, xattrs)
                existing.implicit = False
                return existing
            node = new_dir(0)
            self._set_attrs(node, entry, xattrs)
            parent.children[name] = node
            return node
        node = Node(mode=TYPE_MODE[entry.type])
        self._set_attrs(node, entry, xattrs)
        if entry.type == b"2":
            node.symlink = entry.linkname
            if not entry.linkname:
                raise LayerError(self.source, "symlink with an empty target", member=entry.name,
                                 offset=entry.offset)
        elif entry.type in (b"3", b"4"):
            node.rdev = os.makedev(entry.devmajor, entry.devminor)
        elif entry.is_regular:
            node.size = entry.size
            node.chunks = chunks if chunks is not None else []
        parent.children[name] = node
        return node

    def _lower_link(self, entry: Entry, target_parts: list[bytes], xattrs: dict[bytes, bytes]) -> Node:
        """A hard link to a file this layer does not hold: a placeholder that `merge` resolves
        against the lower layers (every link to the same missing target shares it)."""
        key = b"/".join(target_parts)
        node = self.lower_links.get(key)
        if node is None:
            node = Node(mode=stat.S_IFREG)
            self._set_attrs(node, entry, dict(xattrs))
            node.xattrs[LOWER_LINK_XATTR] = key
            self.lower_links[key] = node
            self.warn(f"hard link {os.fsdecode(entry.name)!r} points at {os.fsdecode(key)!r}, which is "
                      "not in this layer: kept for merge to resolve against the lower layers")
        return node

    @staticmethod
    def _set_attrs(node: Node, entry: Entry, xattrs: dict[bytes, bytes]) -> None:
        node.mode = stat.S_IFMT(node.mode) | (entry.mode & 0o7777)
        node.uid, node.gid = entry.uid, entry.gid
        node.mtime, node.mtime_nsec = entry.mtime, entry.mtime_nsec
        node.xattrs = xattrs


def overlayfs_to_oci(root: Node) -> int:
    """Rewrite overlayfs whiteouts as OCI markers: a 0/0 character device NAME becomes an empty
    file `.wh.NAME`; a directory with trusted.overlay.opaque=y loses the xattr and gains a
    `.wh..wh..opq` entry. Returns how many markers were rewritten."""
    count = 0
    stack = [root]
    while stack:
        d = stack.pop()
        assert d.children is not None
        for name, child in list(d.children.items()):
            if whiteout.is_overlay_whiteout(child.mode, child.rdev):
                del d.children[name]
                d.children[whiteout.PREFIX + name] = Node(mode=stat.S_IFREG | 0o600,
                                                          mtime=child.mtime)
                count += 1
            elif child.is_dir:
                if whiteout.is_overlay_opaque(child.xattrs):
                    del child.xattrs[whiteout.OVERLAY_OPAQUE_XATTR]
                    assert child.children is not None
                    child.children[whiteout.OPAQUE] = Node(mode=stat.S_IFREG | 0o600,
                                                           mtime=child.mtime)
                    count += 1
                stack.append(child)
    return count
