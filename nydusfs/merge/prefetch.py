"""The fs prefetch table of the merged image (merge.md §7): exact paths, in pattern order."""

from __future__ import annotations

import os

from ..tree.node import Node, split_path


def select(root: Node, patterns: list[bytes]) -> tuple[list[bytes], list[str]]:
    """The patterns that name an entry of the merged tree (`/` is the root), and a warning for
    each one left out. Empty regular files are never prefetch targets, as upstream."""
    kept: list[bytes] = []
    warnings: list[str] = []
    for pattern in patterns:
        node: Node | None = root
        for part in split_path(pattern):
            node = node.children.get(part) if node is not None and node.children is not None else None
        show = os.fsdecode(pattern)
        if node is None:
            warnings.append(f"prefetch pattern {show!r} matches nothing in the merged image")
        elif node.is_reg and node.size == 0:
            warnings.append(f"prefetch pattern {show!r} is an empty file; not prefetched")
        else:
            kept.append(pattern)
    return kept, warnings
