"""POSIX (pax) tar headers from bytes: names, link targets and xattr values are never decoded.

Every field that does not fit a ustar header exactly (a long or non-ASCII name, a sub-second
mtime, a large id or size, any xattr) goes into a pax extended header in front of the entry.
Records are written in one fixed order and the pax header itself has a fixed name and zero
times, so the same entry always encodes to the same bytes.
"""

from __future__ import annotations

import dataclasses

BLOCK = 512
PAX_NAME = b"././@PaxHeader"

REG, LINK, SYMLINK, CHR, BLK, DIR, FIFO, PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"

_OCTAL_MAX_7 = 0o7777777          # uid, gid, mode, devmajor, devminor: 7 digits + NUL
_OCTAL_MAX_11 = 0o77777777777     # size, mtime: 11 digits + NUL


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tar member. `mode` is the permission bits (07777); the type is `kind`."""

    name: bytes
    kind: bytes
    mode: int
    uid: int
    gid: int
    mtime: int
    mtime_nsec: int = 0
    size: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()


def pax_record(key: bytes, value: bytes) -> bytes:
    """'LEN key=value\\n' where LEN counts the whole record, its own digits included."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _is_portable(name: bytes, limit: int) -> bool:
    return len(name) <= limit and all(0x20 <= b < 0x7F for b in name)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _mtime_text(sec: int, nsec: int) -> bytes:
    if nsec == 0:
        return str(sec).encode()
    if sec < 0:  # pax times are decimal: -1.5 is 1.5 s before the epoch
        total = sec * 1_000_000_000 + nsec
        whole, frac = divmod(-total, 1_000_000_000)
        return f"-{whole}.{frac:09d}".encode()
    return f"{sec}.{nsec:09d}".encode()


def pax_records(e: Entry) -> bytes:
    recs: list[bytes] = []
    binary = not _is_utf8(e.name) or not _is_utf8(e.linkname)
    if binary:
        recs.append(pax_record(b"hdrcharset", b"BINARY"))
    if not _is_portable(e.name, 100):
        recs.append(pax_record(b"path", e.name))
    if e.linkname and not _is_portable(e.linkname, 100):
        recs.append(pax_record(b"linkpath", e.linkname))
    if e.mtime_nsec or not 0 <= e.mtime <= _OCTAL_MAX_11:
        recs.append(pax_record(b"mtime", _mtime_text(e.mtime, e.mtime_nsec)))
    if e.uid > _OCTAL_MAX_7:
        recs.append(pax_record(b"uid", str(e.uid).encode()))
    if e.gid > _OCTAL_MAX_7:
        recs.append(pax_record(b"gid", str(e.gid).encode()))
    if e.size > _OCTAL_MAX_11:
        recs.append(pax_record(b"size", str(e.size).encode()))
    for name, value in sorted(e.xattrs):
        recs.append(pax_record(b"SCHILY.xattr." + name, value))
    return b"".join(recs)


def _octal(value: int, width: int) -> bytes:
    """`width` bytes: octal digits, zero-padded, NUL-terminated; 0 when the value needs pax."""
    digits = width - 1
    if not 0 <= value < 8 ** digits:
        value = 0
    return b"%0*o\0" % (digits, value)


def ustar_header(name: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                 linkname: bytes = b"", devmajor: int = 0, devminor: int = 0) -> bytes:
    h = bytearray(BLOCK)
    short = name if len(name) <= 100 else name[:100]
    h[0:len(short)] = short
    h[100:108] = _octal(mode & 0o7777, 8)
    h[108:116] = _octal(uid, 8)
    h[116:124] = _octal(gid, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[156:157] = kind
    link = linkname[:100]
    h[157:157 + len(link)] = link
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    # uname, gname: empty (numeric ids only, so the same tree gives the same bytes anywhere)
    if kind in (CHR, BLK):
        h[329:337] = _octal(devmajor, 8)
        h[337:345] = _octal(devminor, 8)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def entry_header(e: Entry) -> bytes:
    """The pax extended header (when needed) and the ustar header of one entry."""
    out = b""
    recs = pax_records(e)
    if recs:
        out = ustar_header(PAX_NAME, PAX, 0o644, 0, 0, len(recs), 0) + recs + padding(len(recs))
    mtime = e.mtime if 0 <= e.mtime <= _OCTAL_MAX_11 else 0
    return out + ustar_header(e.name, e.kind, e.mode, e.uid, e.gid, e.size, mtime, e.linkname,
                              e.devmajor, e.devminor)


END = bytes(2 * BLOCK)
