"""Compare the reference tree with a Nydus image while the image is walked.

`compare` takes two whole path -> Entry maps; for an image read through the reader, that would
hold every entry of both sides at once. Here the image's entries are made, compared and let go
one at a time (their digests within a window of IN_FLIGHT files), and the tree's nodes are let
go once compared: memory is the layers' tree, the window, and two fixed bitmaps. The
differences are those `compare` finds for the same sides, in the same order.
"""

from __future__ import annotations

from collections import deque

from ..reader import Image
from .compare import Difference, Entry, Options, as_entry, count_names, entry_differences, show_path, tree_order
from .oracle import Node
from .sides import IN_FLIGHT, ChunkAudit, Hashing, image_entry

__all__ = ["NameCounts", "audit_image", "compare_image"]


class NameCounts:
    """Which hard-link keys name more than one path, from one pass over every non-directory:
    two bitmaps indexed by the key's hash, whatever the image's size. A key with two names is
    always marked; a collision can only mark a key with one name, which costs a record in the
    hard-link bookkeeping, never a wrong result."""

    BITS = 1 << 24   # 2 MiB per map; about 6% of keys collide at a million entries

    def __init__(self) -> None:
        self.once = bytearray(self.BITS // 8)
        self.twice = bytearray(self.BITS // 8)

    def _at(self, key: object) -> tuple[int, int]:
        h = hash(key) & (self.BITS - 1)
        return h >> 3, 1 << (h & 7)

    def add(self, key: object) -> None:
        i, bit = self._at(key)
        if self.once[i] & bit:
            self.twice[i] |= bit
        else:
            self.once[i] |= bit

    def many(self, key: object) -> bool:
        i, bit = self._at(key)
        return bool(self.twice[i] & bit)


def audit_image(image: Image) -> tuple[list[Difference], NameCounts, int]:
    """One walk of the image: the chunk audit ('chunks' differences), the names per hard-link
    key, and the number of regular files' names."""
    audit = ChunkAudit(image)
    names = NameCounts()
    files = 0
    for path, ino in image.walk():
        node = image.inode(ino)
        if node.is_reg:
            audit.file(path, ino)
            files += 1
        if not node.is_dir:
            names.add(image.link_key(ino))
    return audit.differences(), names, files


def compare_image(root: Node, image: Image, hashing: Hashing | None, opts: Options, algo: str,
                  names: NameCounts) -> tuple[list[Difference], list[Difference], int, int]:
    """(differences in tree order, the image's own problems, expected paths, found paths).
    `names` comes from `audit_image` of the same image; the tree is taken apart."""
    expected_paths = count_names(root)
    ignore = opts.ignore
    out: list[Difference] = []
    problems: list[Difference] = []
    # hard-linked paths both sides hold: (path, expected node, found entry); the groups are
    # only known once every name was seen
    linked: list[tuple[bytes, Entry, Entry]] = []
    queue: deque[tuple[bytes, Entry | None, Entry]] = deque()  # compared once their digest is in
    stack: list[tuple[bytes, Node | None]] = []           # found directories being walked

    def settle(path: bytes, e: Entry | None, f: Entry) -> None:
        if e is None:  # an extra file: its digest is not needed
            if f.kind == "file" and hashing is not None:
                hashing.take(f.link, False, names.many(f.link))
            return
        if f.kind == "file" and hashing is not None:
            f.digest = hashing.take(f.link, e.kind == "file" and e.size == f.size,
                                    names.many(f.link))
        entry_differences(out, path, e, f, opts)
        if "hardlink" not in ignore and (e.kind != "dir" and (e.nlink or 0) > 1
                                         or f.kind != "dir" and names.many(f.link)):
            linked.append((path, e, f))

    def missing(path: bytes, node: Node) -> None:
        """`path` and everything below it: held by the expected side only."""
        todo = [(path, node)]
        while todo:
            p, n = todo.pop()
            if "missing" not in ignore:
                out.append(Difference(p, "missing", n.kind, None))
            if n.kind == "dir":
                todo.extend((p + b"/" + name, child) for name, child in (n.children or {}).items())
                n.children = None

    def close(path: bytes, d: Node | None) -> None:
        """A found directory walked to its end: what the expected one has left is missing."""
        if d is not None:
            base = b"" if path == b"/" else path
            for name, child in (d.children or {}).items():
                missing(base + b"/" + name, child)
            d.children = None

    found_paths = 0
    for path, ino in image.walk():
        found_paths += 1
        f = image_entry(image, path, ino, hashing, algo, problems)
        e: Node | None
        if found_paths == 1:
            e = root
        else:
            parent = path.rpartition(b"/")[0] or b"/"
            while len(stack) > 1 and stack[-1][0] != parent:
                close(*stack.pop())
            d = stack[-1][1] if stack[-1][0] == parent else None
            e = d.children.pop(path.rpartition(b"/")[2], None) if d is not None and d.children else None
        if e is None:
            if "extra" not in ignore:
                out.append(Difference(path, "extra", None, f.kind))
            if f.kind == "dir":
                stack.append((path, None))
        else:
            as_entry(e)
        queue.append((path, e, f))
        if len(queue) > IN_FLIGHT:
            settle(*queue.popleft())
        if e is None:
            continue
        if f.kind == "dir":
            stack.append((path, e if e.kind == "dir" else None))
        elif e.kind == "dir":
            close(path, e)
    while queue:
        settle(*queue.popleft())
    while stack:
        close(*stack.pop())
    out.extend(_hardlinks(linked, names))
    out.sort(key=lambda d: tree_order(d.path))   # stable: per path, fields keep their order
    return out, problems, expected_paths, found_paths


def _hardlinks(linked: list[tuple[bytes, Entry, Entry]], names: NameCounts) -> list[Difference]:
    """'hardlink' differences: per path, the other names of its inode that both sides hold."""
    exp: dict[int, list[bytes]] = {}
    found: dict[object, list[bytes]] = {}
    for path, e, f in linked:
        if e.kind != "dir":
            exp.setdefault(id(e), []).append(path)
        if f.kind != "dir":
            found.setdefault(f.link, []).append(path)
    out = []
    for path, e, f in linked:
        if e.kind == "dir" or e.kind != f.kind:
            continue
        a = frozenset(exp.get(id(e), ())) - {path}
        b = frozenset(found.get(f.link, ())) - {path}
        if a != b:
            out.append(Difference(path, "hardlink", sorted(map(show_path, a)), sorted(map(show_path, b))))
    return out
