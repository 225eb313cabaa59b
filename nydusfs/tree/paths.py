"""Path resolution inside a tree, through its symlinks, as unpacking a layer onto it would walk.

One walk for create (the parent directory of a tar member) and merge (hard-link targets in
lower layers, the directories whiteouts act in, symlinked parents of upper entries). An
absolute target or `..` never leaves the root. check's oracle keeps its own resolution on
purpose: a reference must not share code with what it checks.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from .node import Node, new_dir

MAX_SYMLINK_HOPS = 40       # symlinks followed in one walk, as the kernel's path walk

# why a walk failed
MISSING = "missing"         # a name that is not there (and `create` was not asked for)
NOT_A_DIR = "not a directory"
LOOP = "too many levels of symbolic links"
TOO_LONG = "path longer than PATH_MAX"   # the resolved path, symlinks followed


@dataclasses.dataclass(frozen=True, slots=True)
class Walk:
    node: Node | None                 # where the walk ended; None when it failed
    path: tuple[bytes, ...]           # the names from the root to `node` (symlinks resolved)
    failure: str | None = None        # MISSING, NOT_A_DIR, LOOP or TOO_LONG
    failed_at: tuple[bytes, ...] = ()  # the path of the component that failed


def walk(root: Node, parts: Iterable[bytes], base: Sequence[bytes] = (), *, create: bool = False,
         follow_last: bool = True, max_path: int | None = None) -> Walk:
    """Resolve `parts` (path components) from the directory `base` (names of real directories).

    Every symlink met is followed and every component must be a directory (as the kernel
    resolves `path/`); without `follow_last` the last component is taken as it is, symlink or
    not (as lstat). With `create`, missing names become implied directories;
    when the walk then fails, the directories it made are removed again. Linear in the number of
    components walked. With `max_path` (create gives MAX_PATH), a resolved path longer than that
    many bytes fails (TOO_LONG), which bounds what symlinks can stretch a path to."""
    nodes = [root]
    names: list[bytes] = []
    lengths = [0]                     # bytes of the path to each node in `nodes`
    for name in base:
        assert nodes[-1].children is not None
        nodes.append(nodes[-1].children[name])
        names.append(name)
        lengths.append(lengths[-1] + 1 + len(name))
    pending = [p for p in reversed(list(parts)) if p]
    hops = MAX_SYMLINK_HOPS
    made: list[tuple[Node, bytes]] = []

    def fail(why: str, name: bytes) -> Walk:
        for parent, child in reversed(made):
            del parent.children[child]  # type: ignore[union-attr]
        return Walk(None, tuple(names), why, tuple(names) + (name,))

    while pending:
        part = pending.pop()
        if part == b".":
            continue
        if part == b"..":
            if names:
                names.pop()
                nodes.pop()
                lengths.pop()
            continue
        children = nodes[-1].children
        assert children is not None
        child = children.get(part)
        last = not pending
        if child is None:
            if not create:
                return fail(MISSING, part)
            child = children[part] = new_dir(0o755, implicit=True)
            made.append((nodes[-1], part))
        elif child.symlink is not None and (follow_last or not last):
            hops -= 1
            if hops < 0:
                return fail(LOOP, part)
            if child.symlink.startswith(b"/"):
                del names[:]
                del nodes[1:]
                del lengths[1:]
            pending.extend(p for p in reversed(child.symlink.split(b"/")) if p)
            continue
        elif child.children is None and (follow_last or not last):
            return fail(NOT_A_DIR, part)
        if max_path is not None and lengths[-1] + 1 + len(part) > max_path:
            return fail(TOO_LONG, part)
        names.append(part)
        nodes.append(child)
        lengths.append(lengths[-1] + 1 + len(part))
    return Walk(nodes[-1], tuple(names))
