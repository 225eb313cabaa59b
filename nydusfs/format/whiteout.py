"""OCI and overlayfs whiteout conventions (names are bytes)."""

from __future__ import annotations

import stat

PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = b"trusted.overlay.opaque"


def is_opaque_marker(name: bytes) -> bool:
    return name == OPAQUE


def whiteout_target(name: bytes) -> bytes | None:
    """`X` for an OCI removal marker `.wh.X`, else None (the opaque marker is not a removal)."""
    if name.startswith(PREFIX) and name != OPAQUE:
        target = name[len(PREFIX):]
        return target or None
    return None


def is_overlay_whiteout(mode: int, rdev: int) -> bool:
    return stat.S_ISCHR(mode) and rdev == 0


def is_overlay_opaque(xattrs: dict[bytes, bytes]) -> bool:
    return xattrs.get(OVERLAY_OPAQUE_XATTR) == b"y"
