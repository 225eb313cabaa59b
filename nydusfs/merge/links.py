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
from ..tree.paths import walk


def resolve(lower: Node | None, nodes: list[Node], label: str,
            names: dict[int, list[tuple[bytes, ...]]] | None = None) -> dict[int, Node]:
    """id(placeholder) -> the lower node it names. Symlinks in the target's parent
    directories are followed inside the image; the last component is linked as it is.
    `names` (id(placeholder) -> its paths in the layer) refuses a link put over the lower
    directory that holds its target: unpacking removes the directory first."""
    out: dict[int, Node] = {}
    for p in nodes:
        target = p.xattrs[LOWER_LINK_XATTR]
        parts = tuple(x for x in target.split(b"/") if x)
        for name in (names or {}).get(id(p), []):
            if len(parts) > len(name) and parts[:len(name)] == name:
                raise MergeError(f"{label}: hard link {os.fsdecode(b'/'.join(name))!r} to "
                                 f"{os.fsdecode(target)!r}, over the directory that holds its target")
        node = _lookup(lower, target) if lower is not None else None
        if node is None or node.children is not None or LOWER_LINK_XATTR in node.xattrs:
            what = "a directory" if node is not None and node.children is not None else "not there"
            raise MergeError(f"{label}: hard link to {os.fsdecode(target)!r}, a file of a lower "
                             f"layer, but in the layers below it is {what}")
        out[id(p)] = node
    return out


def _lookup(root: Node, target: bytes) -> Node | None:
    found = walk(root, target.split(b"/"), follow_last=False)
    return found.node if found.path else None
