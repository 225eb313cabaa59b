"""The one in-tree path walk of create and merge (nydusfs/tree/paths.py), against the answers
the kernel's path walk gives on the same tree unpacked into a real directory."""

from __future__ import annotations

import errno
import os
import pathlib
import stat

import pytest

from nydusfs.tree.node import Node, new_dir
from nydusfs.tree.paths import LOOP, MAX_SYMLINK_HOPS, MISSING, NOT_A_DIR, Walk, walk

# name -> None (directory), bytes (symlink target) or int (regular file)
LAYOUT: dict[str, bytes | int | None] = {
    "a": None, "a/b": None, "a/b/f": 1, "abs": b"/a/b", "rel": b"a/b", "up": b"../../a",
    "a/b/back": b"..", "file": 2, "to_file": b"file", "dangling": b"nowhere/x", "loop1": b"loop2",
    "loop2": b"loop1", "a/dot": b".",
}


def _tree() -> Node:
    root = new_dir()
    for name, kind in LAYOUT.items():
        *parents, last = name.encode().split(b"/")
        d = root
        for p in parents:
            d = d.children[p]  # type: ignore[index]
        if kind is None:
            d.children[last] = new_dir()  # type: ignore[index]
        elif isinstance(kind, bytes):
            d.children[last] = Node(mode=stat.S_IFLNK | 0o777, symlink=kind)  # type: ignore[index]
        else:
            d.children[last] = Node(mode=stat.S_IFREG | 0o644, size=kind)  # type: ignore[index]
    return root


def _unpack(top: pathlib.Path) -> None:
    for name, kind in LAYOUT.items():
        p = top / name
        if kind is None:
            p.mkdir()
        elif isinstance(kind, bytes):
            # absolute targets are taken inside the tree, as chroot would
            target = os.path.relpath(top / kind.decode().lstrip("/"), p.parent) if kind.startswith(b"/") \
                else kind.decode()
            p.symlink_to(target)
        else:
            p.write_bytes(b"x" * kind)


PATHS = ["a/b/f", "abs/f", "rel/f", "a/b/back/b/f", "up/b", "to_file", "to_file/x", "dangling",
         "loop1/x", "a/dot/dot/b", "missing/x", "a/b/f/g", "a/../a/b", "abs/../b"]


def _kernel(path: pathlib.Path, follow_last: bool) -> object:
    """What the kernel finds: `path/` resolves the last component as a directory (follow_last),
    lstat leaves a last symlink as it is."""
    try:
        st = os.stat(str(path) + "/") if follow_last else os.lstat(path)
    except OSError as e:
        return {errno.ENOENT: MISSING, errno.ENOTDIR: NOT_A_DIR, errno.ELOOP: LOOP}[e.errno]  # type: ignore[index]
    return "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else st.st_size


def _ours(found: Walk) -> object:
    node = found.node
    if node is None:
        return found.failure
    return "dir" if node.children is not None else "link" if node.symlink is not None else node.size


@pytest.mark.parametrize("follow_last", [True, False])
@pytest.mark.parametrize("path", PATHS)
def test_walk_agrees_with_the_kernel(tmp_path: pathlib.Path, path: str, follow_last: bool) -> None:
    _unpack(tmp_path)
    expected = _kernel(tmp_path / path, follow_last)
    if path.startswith("up"):       # `..` above the root stays at the root, as in a chroot
        expected = "dir"
    assert _ours(walk(_tree(), path.encode().split(b"/"), follow_last=follow_last)) == expected


def test_last_symlink_is_kept_when_asked() -> None:
    root = _tree()
    found = walk(root, [b"to_file"], follow_last=False)
    assert found.node is root.children[b"to_file"] and found.path == (b"to_file",)  # type: ignore[index]
    assert walk(root, [b"abs"], follow_last=False).path == (b"abs",)
    assert walk(root, [b"abs"]).path == (b"a", b"b")


def test_create_makes_implied_directories_and_removes_them_when_the_walk_fails() -> None:
    root = _tree()
    made = walk(root, [b"new", b"deeper"], create=True)
    assert made.path == (b"new", b"deeper") and made.node is not None and made.node.implicit
    failed = walk(root, [b"other", b"x", b"..", b"..", b"file", b"y"], create=True)
    assert failed.failure == NOT_A_DIR and failed.failed_at == (b"file",)
    assert b"other" not in root.children  # type: ignore[operator]
    assert b"new" in root.children  # type: ignore[operator]


def test_hop_limit_is_the_kernels() -> None:
    root = new_dir()
    for i in range(MAX_SYMLINK_HOPS + 1):
        root.children[b"l%d" % i] = Node(mode=stat.S_IFLNK | 0o777, symlink=b"l%d" % (i + 1))  # type: ignore[index]
    root.children[b"l%d" % (MAX_SYMLINK_HOPS + 1)] = new_dir()  # type: ignore[index]
    assert walk(root, [b"l1"]).node is not None           # 40 links followed
    assert walk(root, [b"l0"]).failure == LOOP            # 41


def test_deep_paths_walk_in_one_pass() -> None:
    """20,000 levels: each component is visited once (a re-walk from the root per component
    would take 2 * 10^8 steps here)."""
    parts = [b"d"] * 20_000
    root = new_dir()
    found = walk(root, parts, create=True)
    assert found.node is not None and len(found.path) == 20_000
