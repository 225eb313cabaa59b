"""The overlay step on in-memory trees: what create cannot produce, and the rules themselves."""

from __future__ import annotations

import copy
import stat
import sys

import pytest

from nydusfs.errors import MergeError

from nydusfs.merge.overlay import Rules, apply
from nydusfs.tree.node import Node, count_links, new_dir


def reg(data: bytes = b"", mode: int = 0o644, **kw: object) -> Node:
    return Node(mode=stat.S_IFREG | mode, size=len(data), **kw)  # type: ignore[arg-type]


def d(children: dict[bytes, Node] | None = None, mode: int = 0o755, **kw: object) -> Node:
    node = new_dir(mode, **kw)
    node.children = dict(children or {})
    return node


def chr_dev(rdev: int = 0) -> Node:
    return Node(mode=stat.S_IFCHR | 0o600, rdev=rdev)


def names(node: Node) -> list[bytes]:
    return sorted(node.children or {})


def merged(*layers: Node, spec: str = "oci") -> Node:
    root = None
    for layer in layers:
        root = apply(root, layer, Rules(spec))
    assert root is not None
    return root


def test_markers_act_on_lower_only_whatever_the_order() -> None:
    lower = d({b"a": reg(), b"b": reg(), b"keep": reg()})
    orders = [
        [(b".wh.a", reg()), (b"a", reg(b"new")), (b".wh..wh..opq", reg()), (b"new", reg())],
        [(b"new", reg()), (b".wh..wh..opq", reg()), (b"a", reg(b"new")), (b".wh.a", reg())],
    ]
    for order in orders:
        upper = d(dict(order))
        root = merged(copy.deepcopy(lower), upper)
        assert names(root) == [b"a", b"new"]
        assert root.children[b"a"].size == 3  # type: ignore[index]


def test_lowest_layer_markers_are_dropped_with_their_subtrees() -> None:
    base = d({b".wh.x": reg(), b".wh.dir": d({b"inner": reg()}), b".wh..wh..opq": reg(),
              b"sub": d({b".wh..wh.plnk": d(), b"f": reg()}), b".wh.": reg()})
    root = merged(base)
    assert names(root) == [b"sub"]
    assert names(root.children[b"sub"]) == [b"f"]  # type: ignore[index]


def test_hardlink_to_a_lower_file() -> None:
    """What create emits for a link to a lower file when it can see the lower layer: the
    target re-emitted in the upper layer and the new name, one node under both names."""
    lower_target = reg(b"lower")
    lower = d({b"bin": d({b"tool": lower_target, b"alias": lower_target})})
    upper_copy = reg(b"lower", layer=1)
    upper = d({b"bin": d({b"tool": upper_copy, b"newlink": upper_copy}, implicit=True)}, implicit=True)
    root = merged(lower, upper)
    binx = root.children[b"bin"]  # type: ignore[index]
    assert binx.children[b"tool"] is binx.children[b"newlink"] is upper_copy  # type: ignore[index]
    assert binx.children[b"alias"] is lower_target  # type: ignore[index]
    links = count_links(root)
    assert links[id(upper_copy)] == 2 and links[id(lower_target)] == 1


def test_lower_non_directories_are_never_modified() -> None:
    target = reg(b"t", uid=1)
    lower = d({b"t": target, b"l": target, b"dir": d({b"x": target})})
    before = copy.copy(target)
    root = merged(lower, d({b"t": reg(b"new", uid=2), b"dir": d({b".wh.x": reg()})}))
    assert (target.uid, target.size, target.mode) == (before.uid, before.size, before.mode)
    assert root.children[b"l"] is target  # type: ignore[index]
    assert names(root.children[b"dir"]) == []  # type: ignore[index]


def test_overlayfs_markers() -> None:
    lower = d({b"gone": reg(), b"o": d({b"old": reg()}, mode=0o700), b"keep": reg()})
    upper = d({b"gone": chr_dev(0), b"o": d({b"new": reg()}, xattrs={b"trusted.overlay.opaque": b"y",
                                                                        b"user.k": b"v"}),
               b"realdev": chr_dev(0x0103)}, implicit=True)
    root = merged(lower, upper, spec="overlayfs")
    assert names(root) == [b"keep", b"o", b"realdev"]
    o = root.children[b"o"]  # type: ignore[index]
    assert names(o) == [b"new"] and o.xattrs == {b"user.k": b"v"}


def test_overlayfs_markers_are_plain_entries_under_oci_and_none() -> None:
    for spec in ("oci", "none"):
        lower = d({b"gone": reg(), b"o": d({b"old": reg()})})
        upper = d({b"gone": chr_dev(0), b"o": d({b"new": reg()}, xattrs={b"trusted.overlay.opaque": b"y"}),
                   b".wh.x": reg()})
        root = merged(lower, upper, spec=spec)
        assert stat.S_ISCHR(root.children[b"gone"].mode)  # type: ignore[index]
        assert names(root.children[b"o"]) == [b"new", b"old"]  # type: ignore[index]
        assert (b".wh.x" in root.children) == (spec == "none")  # type: ignore[operator]


def test_implicit_dir_over_non_directory_is_an_error() -> None:
    # unpacking such a layer fails with ENOTDIR; the merge names the layer and the path
    with pytest.raises(MergeError, match="'/f'.*non-directory"):
        merged(d({b"f": reg(b"file")}), d({b"f": d({b"in": reg()}, implicit=True)}, implicit=True))


def test_explicit_dir_over_non_directory_replaces_it() -> None:
    root = merged(d({b"f": reg(b"file")}), d({b"f": d({b"in": reg()})}, implicit=True))
    f = root.children[b"f"]  # type: ignore[index]
    assert f.is_dir and not f.implicit and names(f) == [b"in"]


def test_implicit_dir_through_symlink_loop_is_an_error() -> None:
    lower = d({b"a": Node(mode=stat.S_IFLNK | 0o777, symlink=b"b"),
               b"b": Node(mode=stat.S_IFLNK | 0o777, symlink=b"a")})
    with pytest.raises(MergeError, match="'/a'.*symlink that loops"):
        merged(lower, d({b"a": d({b"f": reg()}, implicit=True)}, implicit=True))


def test_implicit_dir_through_symlink_to_an_ancestor() -> None:
    lower = d({b"usr": d({b"self": Node(mode=stat.S_IFLNK | 0o777, symlink=b"..")})})
    upper = d({b"usr": d({b"self": d({b"f": reg(b"x")}, implicit=True)}, implicit=True)}, implicit=True)
    root = merged(lower, upper)
    assert names(root) == [b"f", b"usr"]
    assert root.children[b"usr"].children[b"self"].is_symlink  # type: ignore[index]


def test_deep_trees_do_not_recurse() -> None:
    depth = sys.getrecursionlimit() + 500

    def chain(leaf: bytes) -> Node:
        top = node = d()
        for _ in range(depth):
            nxt = d()
            node.children[b"d"] = nxt  # type: ignore[index]
            node = nxt
        node.children[leaf] = reg()  # type: ignore[index]
        return top

    root = merged(chain(b"low"), chain(b"high"))
    node = root
    for _ in range(depth):
        node = node.children[b"d"]  # type: ignore[index]
    assert names(node) == [b"high", b"low"]


@pytest.mark.parametrize("upper_implicit", [False, True])
def test_root_attributes(upper_implicit: bool) -> None:
    lower = d({b"x": reg()}, mode=0o700, uid=3, mtime=11)
    upper = d({b"y": reg()}, mode=0o755, uid=0, mtime=22, implicit=upper_implicit)
    root = merged(lower, upper)
    assert (root.mode & 0o7777, root.uid, root.mtime) == ((0o700, 3, 11) if upper_implicit else (0o755, 0, 22))
    assert names(root) == [b"x", b"y"]


def link(target: bytes) -> Node:
    return Node(mode=stat.S_IFLNK | 0o777, symlink=target)


def test_implicit_dir_through_a_dangling_symlink_makes_the_target() -> None:
    lower = d({b"var": d({b"run": link(b"/run/sub")})})
    upper = d({b"var": d({b"run": d({b"pid": reg(b"1")}, implicit=True)}, implicit=True)}, implicit=True)
    root = merged(lower, upper)
    assert root.children[b"var"].children[b"run"].is_symlink  # type: ignore[index]
    sub = root.children[b"run"].children[b"sub"]  # type: ignore[index]
    assert sub.implicit and names(sub) == [b"pid"]


def test_implicit_dir_through_a_symlink_to_a_file_is_an_error() -> None:
    lower = d({b"f": reg(b"file"), b"s": link(b"f/deeper")})
    with pytest.raises(MergeError, match="'/s'"):
        merged(lower, d({b"s": d({b"x": reg()}, implicit=True)}, implicit=True))
    assert names(lower) == [b"f", b"s"]   # nothing left made on the failed walk


def test_markers_find_their_directory_through_lower_symlinks() -> None:
    """Whiteouts first: `lib/.wh.x` names the lower lib/x even when the same layer then puts
    a real directory where the lib symlink was."""
    lower = d({b"usr": d({b"lib": d({b"x": reg(), b"y": reg()})}), b"lib": link(b"usr/lib")})
    upper = d({b"lib": d({b".wh.x": reg(), b"new": reg()}, mode=0o700)}, implicit=True)
    root = merged(lower, upper)
    assert names(root.children[b"usr"].children[b"lib"]) == [b"y"]  # type: ignore[index]
    assert root.children[b"lib"].is_dir and names(root.children[b"lib"]) == [b"new"]  # type: ignore[index]


def test_markers_see_the_lower_tree_as_it_was() -> None:
    """Removing a symlink and something below it in one layer: both act, in any order, and the
    directory s that only the marker implied is not created (markers create nothing)."""
    for order in ([b".wh.s", b"s"], [b"s", b".wh.s"]):
        lower = d({b"t": d({b"x": reg(), b"y": reg()}), b"s": link(b"t")})
        kids = {b".wh.s": reg(), b"s": d({b".wh.x": reg()}, implicit=True)}
        root = merged(lower, d({k: kids[k] for k in order}, implicit=True))
        assert names(root.children[b"t"]) == [b"y"]  # type: ignore[index]
        assert names(root) == [b"t"]
