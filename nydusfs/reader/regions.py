"""Re-encode every structure the reader decodes, at its file offset.

`reencode(image)` writes each decoded record, table, name, xattr area, dirent block, inline
tail and chunk index back into a zeroed buffer of the bootstrap's size. For a well-formed
bootstrap the result equals the file byte for byte; any byte the decoders skip or misread
shows up as a difference. This is the decode -> encode proof the format core promises, and a
completeness check of the decoders (what they do not read, they cannot write back). Each
version's reader lists its structures (`Image.regions()`, in v5.py and v6.py).
"""

from __future__ import annotations

from typing import Iterator

from .base import Image
from .model import Region

__all__ = ["Region", "first_difference", "reencode", "regions"]


def regions(image: Image) -> Iterator[Region]:
    """Every decoded structure of the bootstrap as (offset, re-encoded bytes, description)."""
    return image.regions()


def reencode(image: Image) -> bytes:
    out = bytearray(image.size)
    for r in regions(image):
        out[r.offset:r.offset + len(r.data)] = r.data
    return bytes(out)


def first_difference(image: Image) -> tuple[int, list[str]] | None:
    """(offset, regions covering it) of the first byte that does not round-trip, else None."""
    raw = image.raw()
    got = reencode(image)
    if got == raw:
        return None
    at = next(i for i, (a, b) in enumerate(zip(raw, got, strict=True)) if a != b)
    return at, [r.what for r in regions(image) if r.offset <= at < r.offset + len(r.data)]
