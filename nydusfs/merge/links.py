"""Hard links from a layer to files of lower layers.

`create` cannot resolve such a link from one layer: it stores an empty placeholder file that
carries the target path in a private xattr (every name linking to the same target shares it).
Once the layer's whiteouts have acted, and before its entries are added, each placeholder is
looked up in the merged tree of the layers below; adding the entries then puts the lower file
under the placeholder's names, so they become more names of that inode, as linking onto the
unpacked lower layers would (whiteouts first, as the OCI rules read).
"""

from __future__ import annotations

import os

from ..errors import MergeError
from ..tree.node import LOWER_LINK_XATTR, Node

MAX_SYMLINK_HOPS = 40


def resolve(lower: Node | None, nodes: list[Node], label: str) -> dict[int, Node]:
    """id(placeholder) -> the lower node it names. Symlinks in the target's parent
    directories are followed inside the image; the last component is linked as it is."""
    out: dict[int, Node] = {}
    for p in nodes:
        target = p.xattrs[LOWER_LINK_XATTR]
        node = _lookup(lower, target) if lower is not None else None
        if node is None or node.children is not None or LOWER_LINK_XATTR in node.xattrs:
            what = "a directory" if node is not None and node.children is not None else "not there"
            raise MergeError(f"{label}: hard link to {os.fsdecode(target)!r}, a file of a lower "
                             f"layer, but in the layers below it is {what}")
        out[id(p)] = node
    return out


def _lookup(root: Node, target: bytes) -> Node | None:
    path: list[Node] = [root]
    pending = [p for p in target.split(b"/") if p][::-1]
    hops = MAX_SYMLINK_HOPS
    while pending:
        part = pending.pop()
        if part == b".":
            continue
        if part == b"..":
            if len(path) > 1:
                path.pop()
            continue
        child = (path[-1].children or {}).get(part)
        if child is None:
            return None
        if child.symlink is not None and pending:
            hops -= 1
            if hops < 0:
                return None
            if child.symlink.startswith(b"/"):
                path = [root]
            pending.extend(p for p in reversed(child.symlink.split(b"/")) if p)
            continue
        if pending and child.children is None:
            return None
        path.append(child)
    return path[-1] if len(path) > 1 else None
