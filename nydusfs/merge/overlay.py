"""Apply one layer's tree on top of the merged tree, with OCI whiteout rules (merge.md §4).

In two phases, so that whiteouts only ever hit lower content, whatever the order of the
entries in the layer's tar: first every marker of the layer acts on the lower tree (removals,
opaque directories; a marker's directory is found as the layer's tar would find it, through
lower symlinks), then the other entries are added or replace what the lower layers had. A
directory over a directory merges the children and takes the upper attributes, unless the
upper directory was only implied by its layer (no tar entry of its own): then the lower
directory keeps its real metadata. Any other combination replaces the whole entry.

Choices where upstream differs (docs/merge.md):
- markers are also dropped from the lowest layer (upstream keeps them as plain files);
- a directory that a layer only implied, over a lower symlink, is a symlinked parent in the
  layer's tar paths: its entries go where the symlink leads (inside the image, missing
  directories created), as umoci and containerd unpack them, instead of replacing the symlink;
- a directory a layer only implied over a lower non-directory (or a symlink that loops or ends at
  one) is an error, as unpacking fails there; upstream replaces the lower entry.

Non-directory nodes are never modified: a hard-link group is one Node under several names,
so replacing one name leaves the other names of the group together.
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import MergeError
from ..format.choices import WhiteoutSpec
from ..format.whiteout import OPAQUE, OVERLAY_OPAQUE_XATTR, PREFIX
from ..tree.node import HIDDEN_MARKERS_XATTR, LOWER_LINK_XATTR, Node
from ..tree.paths import walk
from . import links

# marker kinds
REMOVE = 1        # hide the lower entry of a given name
OPAQUE_ALL = 2    # hide every lower child of this directory
OPAQUE_DIR = 3    # overlayfs: this upper directory hides the lower one's children

Path = tuple[bytes, ...]


class Rules:
    """Which whiteout convention is recognised: `oci` (.wh. names), `overlayfs` (0/0
    character devices and trusted.overlay.opaque=y directories) or `none`."""

    def __init__(self, spec: str = WhiteoutSpec.OCI) -> None:
        self.oci = spec == WhiteoutSpec.OCI
        self.overlayfs = spec == WhiteoutSpec.OVERLAYFS

    def marker(self, name: bytes, node: Node) -> tuple[int, bytes] | None:
        """(kind, the name it applies to), or None for an ordinary entry."""
        if self.oci and name.startswith(PREFIX):
            # every .wh. name is a marker (the OCI spec reserves the prefix); `.wh.` alone and
            # aufs metadata such as `.wh..wh.plnk` name nothing that exists and just vanish
            return (OPAQUE_ALL, b"") if name == OPAQUE else (REMOVE, name[len(PREFIX):])
        if self.overlayfs:
            if node.children is None and node.rdev == 0 and _is_chr(node.mode):
                return REMOVE, name
            if node.children is not None and node.xattrs.get(OVERLAY_OPAQUE_XATTR) == b"y":
                return OPAQUE_DIR, name
        return None


def _is_chr(mode: int) -> bool:
    return mode & 0o170000 == 0o020000


@dataclasses.dataclass
class Scan:
    """What a layer asks of the layers below it, found in one walk of its tree."""

    markers: list[tuple[Path, int, bytes]]   # (directory in the layer, REMOVE|OPAQUE_ALL, name)
    placeholders: list[Node]                 # hard links to lower files (links.py), each once
    names: dict[int, list[Path]] = dataclasses.field(default_factory=dict)  # id(placeholder) -> its paths


def scan(upper: Node, rules: Rules) -> Scan:
    markers = hidden_markers(upper, rules)
    placeholders: dict[int, Node] = {}
    names: dict[int, list[Path]] = {}
    stack: list[tuple[Node, Path]] = [(upper, ())]
    while stack:
        d, path = stack.pop()
        for name, child in d.children.items():  # type: ignore[union-attr]
            m = rules.marker(name, child)
            if m is not None and m[0] != OPAQUE_DIR:
                markers.append((path, m[0], m[1]))
            elif child.children is not None:
                stack.append((child, path + (name,)))
            elif child.xattrs and LOWER_LINK_XATTR in child.xattrs:
                placeholders[id(child)] = child
                names.setdefault(id(child), []).append(path + (name,))
    return Scan(markers, list(placeholders.values()), names)


def hidden_markers(upper: Node, rules: Rules) -> list[tuple[Path, int, bytes]]:
    """Markers whose directory the layer itself replaced by a non-directory (create keeps them
    in the root's HIDDEN_MARKERS_XATTR): gone from the tree, they still hide lower files, from
    the layer's hard links too."""
    raw = upper.xattrs.get(HIDDEN_MARKERS_XATTR) if rules.oci else None
    out: list[tuple[Path, int, bytes]] = []
    for item in raw.split(b"\0") if raw else ():
        parts = tuple(p for p in item.split(b"/") if p)
        if parts and parts[-1].startswith(PREFIX):
            name = parts[-1]
            out.append((parts[:-1], OPAQUE_ALL, b"") if name == OPAQUE
                       else (parts[:-1], REMOVE, name[len(PREFIX):]))
    return out


def remove_whiteouts(root: Node, markers: list[tuple[Path, int, bytes]]) -> None:
    """Phase 1: every marker's directory is looked up in the lower tree as it was before any
    of them acted (so their order does not matter), then all of them act."""
    actions = []
    for path, kind, name in markers:
        found = resolve_dir(root, (), b"/".join(path), create=False) if path else (root, ())
        if found is not None:
            actions.append((found[0], kind, name))
    for d, kind, name in actions:
        if kind == REMOVE:
            d.children.pop(name, None)  # type: ignore[union-attr]
        else:
            d.children.clear()  # type: ignore[union-attr]


def add_entries(lower: Node | None, upper: Node, rules: Rules,
                substitute: dict[int, Node] | None = None, label: str = "the layer") -> Node:
    """Phase 2: merge the entries of `upper` (a layer's root; markers are skipped) onto `lower`
    (the merged root, or None for the lowest layer) and return the merged root. `lower` is
    changed in place; `upper` must not be used afterwards. `substitute` maps id(node) of
    upper non-directories to the node to insert instead (hard links to lower files)."""
    swap = substitute or {}
    if lower is None:
        root = _copy_dir(upper, _xattrs(upper, rules))
    else:
        root = lower
        if not upper.implicit:
            _take_attrs(root, upper, _xattrs(upper, rules))
    stack: list[tuple[Node, Node, Path]] = [(root, upper, ())]
    memo: dict[int, bool] = {}
    while stack:
        dst, up, path = stack.pop()
        _merge_dir(root, dst, up, path, rules, stack, swap, label, memo)
    return root


def apply(lower: Node | None, upper: Node, rules: Rules, label: str = "the layer") -> Node:
    """Apply one layer: its whiteouts, then its hard links to lower files (bound to the lower
    nodes; `label` names the layer in errors), then its entries. Returns the merged root."""
    wanted = scan(upper, rules)
    if lower is not None:
        remove_whiteouts(lower, wanted.markers)
    swap = links.resolve(lower, wanted.placeholders, label, wanted.names) if wanted.placeholders else None
    return add_entries(lower, upper, rules, swap, label)


def _merge_dir(root: Node, dst: Node, up: Node, path: Path, rules: Rules,
               stack: list[tuple[Node, Node, Path]], swap: dict[int, Node], label: str,
               memo: dict[int, bool]) -> None:
    kids = dst.children
    assert kids is not None and up.children is not None
    for name, u in up.children.items():
        m = rules.marker(name, u)
        if m is not None and m[0] != OPAQUE_DIR:
            continue            # acted in phase 1 (or, in the lowest layer, on nothing)
        if u.children is None:
            kids[name] = swap.get(id(u), u) if swap else u
            continue
        if u.implicit and m is None and _only_markers(u, rules, memo):
            continue            # implied only by whiteouts, which acted in phase 1: adds nothing
        low = kids.get(name)
        if low is not None and low.children is not None and m is None:
            if not u.implicit:
                _take_attrs(low, u, _xattrs(u, rules))
            stack.append((low, u, path + (name,)))
            continue
        if low is not None and u.implicit and low.symlink is not None:
            found = resolve_dir(root, path, low.symlink, create=True)
            if found is not None:
                stack.append((found[0], u, found[1]))
                continue
        if low is not None and u.implicit and m is None:
            # the layer only names paths below `name`, which the lower layers made a
            # non-directory (or a symlink that leads nowhere usable): unpacking the layer onto
            # the lower ones fails there (ENOTDIR, ELOOP), so the merge refuses it too
            where = "/" + os.fsdecode(b"/".join(path + (name,)))
            what = "a symlink that loops or ends at a non-directory" if low.symlink is not None \
                else "a non-directory"
            raise MergeError(f"{label}: has entries below {where!r}, which the lower layers made "
                             f"{what}, and no entry of its own replacing it; unpacking this layer "
                             "onto the lower ones would fail there")
        merged = kids[name] = _copy_dir(u, _xattrs(u, rules))
        stack.append((merged, u, path + (name,)))


def _only_markers(node: Node, rules: Rules, memo: dict[int, bool]) -> bool:
    """An implied directory holding nothing but whiteout markers (at any depth): unpacking it
    creates nothing, not even the directory (a whiteout of a path that is not there is a no-op).
    Answers for the whole subtree are kept in `memo` (by id), so a deep chain of implied
    directories costs one pass, not one per level."""
    if id(node) in memo:
        return memo[id(node)]
    order, stack = [], [node]
    while stack:
        d = stack.pop()
        order.append(d)
        for name, child in (d.children or {}).items():
            m = rules.marker(name, child)
            if m is None and child.children is not None and child.implicit and id(child) not in memo:
                stack.append(child)
    for d in reversed(order):  # children before their parents
        ok = True
        for name, child in (d.children or {}).items():
            m = rules.marker(name, child)
            if m is not None and m[0] != OPAQUE_DIR:
                continue
            if child.children is None or not child.implicit or m is not None or not memo[id(child)]:
                ok = False
                break
        memo[id(d)] = ok
    return memo[id(node)]


def _xattrs(node: Node, rules: Rules) -> dict[bytes, bytes]:
    """The overlayfs opaque mark and the hidden markers are instructions to the merge, not
    content."""
    drop: tuple[bytes, ...] = (HIDDEN_MARKERS_XATTR, OVERLAY_OPAQUE_XATTR) if rules.overlayfs \
        else (HIDDEN_MARKERS_XATTR,)
    if any(k in node.xattrs for k in drop):
        return {k: v for k, v in node.xattrs.items() if k not in drop}
    return node.xattrs


def _take_attrs(dst: Node, src: Node, xattrs: dict[bytes, bytes]) -> None:
    dst.mode, dst.uid, dst.gid = src.mode, src.uid, src.gid
    dst.mtime, dst.mtime_nsec = src.mtime, src.mtime_nsec
    dst.xattrs, dst.layer, dst.implicit = xattrs, src.layer, src.implicit


def _copy_dir(src: Node, xattrs: dict[bytes, bytes]) -> Node:
    return Node(mode=src.mode, uid=src.uid, gid=src.gid, mtime=src.mtime,
                mtime_nsec=src.mtime_nsec, xattrs=xattrs, children={}, layer=src.layer,
                implicit=src.implicit)


def resolve_dir(root: Node, base: Path, target: bytes, create: bool) -> tuple[Node, Path] | None:
    """The directory a symlink in directory `base` leads to, resolved inside the image (an
    absolute target or `..` never leaves the root), or None if it loops or a non-directory
    is in the way. With `create`, missing directories are made (implied ones), as unpackers
    do for a dangling symlink; nothing is left made when the walk then fails."""
    if not target:
        return None
    found = walk(root, target.split(b"/"), () if target.startswith(b"/") else base, create=create)
    return None if found.node is None else (found.node, found.path)
