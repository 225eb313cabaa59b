"""What the RAFS records can hold, and the guard that refuses any value they cannot.

create checks tar fields against these limits first (to name the member); the writers check
every record again as they encode it, so a value from any source (a merged bootstrap, a tree
built in code) is refused with its path, record, field and limit instead of being truncated or
failing inside `struct`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from ..errors import FieldRangeError

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
# rdev is stored as the 32-bit new_encode_dev form in both versions (v5 i_rdev, v6 i_u):
# 12 bits of major, 20 bits of minor
DEV_MAJOR_MAX = 0xFFF
DEV_MINOR_MAX = 0xF_FFFF
XATTR_NAME_MAX = 255           # Linux XATTR_NAME_MAX; the v6 entry keeps a 1-byte suffix length
XATTR_VALUE_MAX = 0xFFFF       # v6 entries keep a 2-byte value size
V6_CHUNK_INDEX_MAX = (1 << 24) - 1     # chunk index: 16 bits of advise + 8 bits of device_id
V6_BLOB_INDEX_MAX = 254                # device_id's low byte holds blob_index + 1

_CODE = re.compile(r"(\d*)([xcbB?hHiIlLqQnNefdsp])")
_RANGES = {"B": (0, 0xFF), "H": (0, U16_MAX), "I": (0, U32_MAX), "Q": (0, U64_MAX),
           "b": (-0x80, 0x7F), "h": (-0x8000, 0x7FFF), "i": (-(1 << 31), (1 << 31) - 1),
           "q": (-(1 << 63), (1 << 63) - 1)}
_field_codes: dict[type, list[str]] = {}


def _codes(cls: type) -> list[str]:
    codes = _field_codes.get(cls)
    if codes is None:
        codes = []
        for count, code in _CODE.findall(cls.FORMAT[1:]):  # type: ignore[attr-defined]
            codes.extend([code] if code == "s" else [code] * int(count or 1))
        _field_codes[cls] = codes
    return codes


Where = str | Callable[[], str]


def entry_path(e: Any) -> str:
    """The absolute path of a numbering entry, escaped for a message."""
    from ..util.show import printable

    parts = []
    while e is not None and e.parent is not None:
        parts.append(e.name)
        e = e.parent
    return printable(b"/" + b"/".join(reversed(parts)))


def _where(where: Where) -> str:
    return where if isinstance(where, str) else where()


def encode(rec: Any, where: Where) -> bytes:
    """`rec.encode()`, or a FieldRangeError naming `where`, the record, the field, the value and
    the limit (checked only when packing fails, so the common case costs nothing)."""
    try:
        return rec.encode()
    except (struct.error, OverflowError):
        pass
    for name, code in zip(rec._names, _codes(type(rec)), strict=True):
        if code not in _RANGES:
            continue
        lo, hi = _RANGES[code]
        value = getattr(rec, name)
        if not (isinstance(value, int) and lo <= value <= hi):
            raise FieldRangeError(_where(where), rec.STRUCTURE, name, value,
                                  hi if isinstance(value, int) and value > hi else lo)
    raise FieldRangeError(_where(where), rec.STRUCTURE, "?", None, None)


def check(where: Where, structure: str, field: str, value: int, limit: int) -> None:
    """Refuse `value` above `limit` (or negative) for a field packed by hand."""
    if value > limit or value < 0:
        raise FieldRangeError(_where(where), structure, field, value, limit if value > limit else 0)


def disk_rdev(rdev: int, where: Where, structure: str) -> int:
    """The 32-bit on-disk rdev of a Linux dev_t, refusing device numbers it cannot hold."""
    import os

    from ..reader.model import dev_to_disk

    check(where, structure, "rdev major", os.major(rdev), DEV_MAJOR_MAX)
    check(where, structure, "rdev minor", os.minor(rdev), DEV_MINOR_MAX)
    return dev_to_disk(rdev)
