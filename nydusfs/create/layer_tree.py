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
from ..tree.node import HIDDEN_MARKERS_XATTR, LOWER_LINK_XATTR, NO_CHUNKS, NO_XATTRS, Node, new_dir, split_path
from ..tree.paths import LOOP, MAX_SYMLINK_HOPS, TOO_LONG, walk
from ..util.limits import MAX_PATH
from ..util.show import quoted
from ..write.limits import XATTR_NAME_MAX, XATTR_VALUE_MAX
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
    """Xattrs RAFS can keep (user., trusted., security., POSIX ACLs; names up to 255 bytes,
    values up to 64 KiB), and the dropped names."""
    kept, dropped = {}, []
    for name, value in xattrs.items():
        try:
            v6.split_xattr_name(name)
        except ValueError:
            dropped.append(name)
            continue
        if len(value) > XATTR_VALUE_MAX or len(name) > XATTR_NAME_MAX:
            dropped.append(name)
            continue
        kept[name] = value
    return kept, dropped


def _holds(d: Node, node: Node) -> bool:
    """Whether `node` is somewhere below directory `d`."""
    stack = [d]
    while stack:
        for child in (stack.pop().children or {}).values():
            if child is node:
                return True
            if child.is_dir:
                stack.append(child)
    return False


class LayerTree:
    def __init__(self, source: str, warn: Callable[[str], None] = lambda m: None) -> None:
        self.source = source
        self.warn = warn
        self.root = new_dir(0o755, implicit=True)
        self.dropped_xattrs: dict[bytes, int] = {}
        self.lower_links: dict[bytes, Node] = {}
        self.hidden_markers: list[bytes] = []     # see HIDDEN_MARKERS_XATTR
        self.before_1970 = 0        # entries whose negative mtime was stored as 0
        self._ints: dict[int, int] = {}

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
        if parts[-1].startswith(whiteout.PREFIX) and self._below_non_directory(parts):
            # a whiteout below a path this layer turned into a file or symlink: it acts on the
            # lower layers only (before this layer's entries), so it is not placed where this
            # layer's symlink leads but kept as it is written (HIDDEN_MARKERS_XATTR)
            self.hidden_markers.append(b"/".join(parts))
            return None
        parent = self._parent(parts, entry)
        name = parts[-1]
        assert parent.children is not None
        existing = parent.children.get(name)
        if entry.type == b"1":
            target_parts = clean_parts(entry.linkname, self.source, entry, "hard link target")
            target = self.lookup(target_parts)
            if target is None:
                target_parts = self._link_path(entry, target_parts)
                target = self.lookup(target_parts)
            if target is None:
                target = self._lower_link(entry, target_parts, xattrs)
            if target.is_dir:
                raise LayerError(self.source, f"hard link to directory {entry.linkname[:200]!r}",
                                 member=entry.name, offset=entry.offset)
            if existing is not None and existing.is_dir and (
                    _holds(existing, target) or target_parts[:len(parts)] == parts):
                # unpacking removes the directory first, and the target with it
                raise LayerError(self.source, f"hard link over the directory that holds its target "
                                 f"{entry.linkname[:200]!r}", member=entry.name, offset=entry.offset)
            if existing is not target:
                self._hide_markers(parts, existing)
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
            # the chunker fills `chunks` later: only a file without data shares the empty list
            node.chunks = chunks if chunks is not None and entry.size else NO_CHUNKS
        self._hide_markers(parts, existing)
        parent.children[name] = node
        return node

    def _hide_markers(self, parts: list[bytes], replaced: Node | None) -> None:
        """A directory replaced by a non-directory takes its whiteout markers with it: keep
        their paths (HIDDEN_MARKERS_XATTR), they still act on the lower layers."""
        if replaced is None or not replaced.is_dir:
            return
        stack: list[tuple[list[bytes], Node]] = [(parts, replaced)]
        while stack:
            path, d = stack.pop()
            for name, child in (d.children or {}).items():
                if name.startswith(whiteout.PREFIX):
                    self.hidden_markers.append(b"/".join(path + [name]))
                elif child.is_dir:
                    stack.append((path + [name], child))

    def _below_non_directory(self, parts: list[bytes]) -> bool:
        node = self.root
        for p in parts[:-1]:
            node = (node.children or {}).get(p)  # type: ignore[assignment]
            if node is None:
                return False
            if not node.is_dir:
                return True
        return False

    def _link_path(self, entry: Entry, parts: list[bytes]) -> list[bytes]:
        """The target of a hard link as linking in the unpacked layer finds it: symlinks of
        this layer on the way are followed; below the first component the layer does not hold,
        the path is the lower layers' (merge resolves it). A non-directory of this layer on the
        way fails there (ENOTDIR), so it is an error."""
        pending = list(parts[:-1])
        resolved: list[bytes] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == b"..":
                if resolved:
                    resolved.pop()
                continue
            node = self.lookup(resolved + [name])
            if node is None or node.is_dir:
                resolved.append(name)
            elif node.is_symlink:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise LayerError(self.source, "too many levels of symbolic links in the hard "
                                     "link target", member=entry.name, offset=entry.offset)
                target = node.symlink or b""
                if target.startswith(b"/"):
                    resolved = []
                pending = [p for p in target.split(b"/") if p and p != b"."] + pending
            else:
                raise LayerError(self.source, f"hard link to {entry.linkname[:200]!r}, below "
                                 f"{b'/'.join(resolved + [name])[:200]!r}, which this layer made a "
                                 "non-directory", member=entry.name, offset=entry.offset)
        return resolved + parts[-1:]

    def finish(self) -> None:
        """After the last entry: markers that left the tree go into the root's private xattr."""
        if self.hidden_markers:
            self.root.xattrs = {**self.root.xattrs, HIDDEN_MARKERS_XATTR: b"\0".join(self.hidden_markers)}

    def _lower_link(self, entry: Entry, target_parts: list[bytes], xattrs: dict[bytes, bytes]) -> Node:
        """A hard link to a file this layer does not hold: a placeholder that `merge` resolves
        against the lower layers (every link to the same missing target shares it)."""
        key = b"/".join(target_parts)
        node = self.lower_links.get(key)
        if node is None:
            node = Node(mode=stat.S_IFREG)
            self._set_attrs(node, entry, xattrs)
            node.xattrs = {**node.xattrs, LOWER_LINK_XATTR: key}
            self.lower_links[key] = node
            self.warn(f"hard link {os.fsdecode(entry.name)!r} points at {os.fsdecode(key)!r}, which is "
                      "not in this layer: kept for merge to resolve against the lower layers")
        return node

    def _shared(self, value: int) -> int:
        """One int object per distinct value (modes, ids and times repeat across a layer; each
        int past 256 is a 32-byte object per entry otherwise); at most 65536 values kept."""
        found = self._ints.get(value)
        if found is not None:
            return found
        if len(self._ints) < 65536:
            self._ints[value] = value
        return value

    def _set_attrs(self, node: Node, entry: Entry, xattrs: dict[bytes, bytes]) -> None:
        shared = self._shared
        node.mode = shared(stat.S_IFMT(node.mode) | (entry.mode & 0o7777))
        node.uid, node.gid = shared(entry.uid), shared(entry.gid)
        node.mtime, node.mtime_nsec = shared(entry.mtime), shared(entry.mtime_nsec)
        if entry.mtime < 0:
            # RAFS times are unsigned: a date before 1970 is stored as 0 (the epoch), the rule
            # check's reference applies too; one warning per layer
            node.mtime = node.mtime_nsec = 0
            if not self.before_1970:
                self.warn(f"member {quoted(entry.name)} is dated before 1970 (mtime "
                          f"{entry.mtime}); stored as 0, as for every such entry of this layer")
            self.before_1970 += 1
        node.xattrs = xattrs if xattrs else NO_XATTRS


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
