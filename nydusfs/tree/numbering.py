"""Entry numbering shared by the v5 and v6 bootstrap writers (rafs-v5.md §6.2, rafs-v6.md §5.6).

Root is 1. Then, for each directory in depth-first order over directories, all of its children
get consecutive numbers in name order. The first name of a hard-linked node (lowest number)
owns the inode; later names point at it.
"""

from __future__ import annotations

import dataclasses

from .node import Node


@dataclasses.dataclass(slots=True, eq=False)
class Entry:
    index: int
    name: bytes
    node: Node
    parent: "Entry | None"
    first: "Entry | None" = None       # for a later hard-link name: the owning entry
    child_index: int = 0               # directories: index of the first child
    child_count: int = 0
    nlink: int = 1

    @property
    def owner(self) -> "Entry":
        return self.first or self

    @property
    def ino(self) -> int:
        return self.owner.index


def number_entries(root: Node) -> list[Entry]:
    """All entries in index order (entries[i].index == i + 1)."""
    entries = [Entry(1, b"/", root, None)]
    owners: dict[int, Entry] = {}
    stack = [entries[0]]
    while stack:
        d = stack.pop()
        kids = d.node.sorted_children()
        d.child_index = len(entries) + 1
        d.child_count = len(kids)
        subdirs = []
        for name, child in kids:
            e = Entry(len(entries) + 1, name, child, d)
            entries.append(e)
            if child.is_dir:
                subdirs.append(e)
                continue
            owner = owners.get(id(child))
            if owner is None:
                owners[id(child)] = e
            else:
                e.first = owner
                owner.nlink += 1
        d.nlink = 2 + len(subdirs)
        stack.extend(reversed(subdirs))
    for e in entries:
        if e.first is not None:
            e.nlink = e.first.nlink
    return entries


def resolve_paths(entries: list[Entry], paths: list[bytes]) -> tuple[list[Entry], list[bytes]]:
    """Entries named by absolute paths (in the given order) and the paths that matched nothing."""
    by_path: dict[bytes, Entry] = {}
    wanted = {p.rstrip(b"/") or b"/" for p in paths}
    full: dict[int, bytes] = {}
    for e in entries:
        if e.parent is None:
            p = b"/"
        else:
            base = full[e.parent.index]
            p = (b"" if base == b"/" else base) + b"/" + e.name
        if e.node.is_dir:
            full[e.index] = p
        if p in wanted:
            by_path[p] = e
    found, missing = [], []
    for raw in paths:
        p = raw.rstrip(b"/") or b"/"
        (found.append(by_path[p]) if p in by_path else missing.append(raw))
    return found, missing
