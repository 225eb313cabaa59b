"""Helpers of the hostile-input tests: tar members built byte by byte (so that any field can
hold what no well-behaved writer produces: base-256 numbers, PAX records with NULs, mtimes of
thousands of digits), and the CLI run in a subprocess with the one-line-error assertions."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

BLOCK = 512
NYDUSFS = [sys.executable, "-m", "nydusfs"]


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _number(value: int | bytes, width: int) -> bytes:
    """A numeric header field: octal when it fits, else GNU base-256; raw bytes as they are."""
    if isinstance(value, bytes):
        return value.ljust(width, b"\0")[:width]
    if 0 <= value < 8 ** (width - 1):
        return _octal(value, width)
    assert 0 <= value < 1 << (8 * width - 1), value
    return bytes([0x80]) + value.to_bytes(width - 1, "big") if value < 1 << (8 * (width - 1)) \
        else (value | (1 << (8 * width - 1))).to_bytes(width, "big")


def header(name: bytes, kind: bytes = b"0", *, size: int | bytes = 0, mode: int = 0o644,
           uid: int | bytes = 0, gid: int | bytes = 0, mtime: int | bytes = 0,
           linkname: bytes = b"", devmajor: int | bytes = 0, devminor: int | bytes = 0) -> bytes:
    """One ustar header block with a valid checksum."""
    b = bytearray(BLOCK)
    b[0:100] = name[:100].ljust(100, b"\0")
    b[100:108] = _number(mode, 8)
    b[108:116] = _number(uid, 8)
    b[116:124] = _number(gid, 8)
    b[124:136] = _number(size, 12)
    b[136:148] = _number(mtime, 12)
    b[148:156] = b" " * 8
    b[156:157] = kind
    b[157:257] = linkname[:100].ljust(100, b"\0")
    b[257:263] = b"ustar\0"
    b[263:265] = b"00"
    b[329:337] = _number(devmajor, 8)
    b[337:345] = _number(devminor, 8)
    b[148:156] = f"{sum(b):06o}".encode() + b"\0 "
    return bytes(b)


def pax_records(records: dict[bytes, bytes]) -> bytes:
    out = b""
    for key, value in records.items():
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes, kind: bytes = b"0", data: bytes = b"", pax: dict[bytes, bytes] | None = None,
           **fields: Any) -> bytes:
    """A member (with its PAX extended header when given): header blocks plus padded data."""
    out = b""
    if pax:
        payload = pax_records(pax)
        out += header(b"PaxHeaders/" + name[:80], b"x", size=len(payload)) + _padded(payload)
    if kind in (b"0", b"\0", b"7") and "size" not in fields:
        fields["size"] = len(data)
    out += header(name, kind, **fields)
    if kind in (b"0", b"\0", b"7"):
        out += _padded(data)
    return out


def tar(*members: bytes) -> bytes:
    return b"".join(members) + bytes(2 * BLOCK)


def write(path: pathlib.Path, *members: bytes) -> pathlib.Path:
    path.write_bytes(tar(*members))
    return path


def run(*args: Any, timeout: float = 120, env: dict[str, str] | None = None,
        stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(NYDUSFS + [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                                     for a in args],
                          capture_output=True, timeout=timeout, env=env, stdin=stdin, check=False)


def stderr_lines(p: subprocess.CompletedProcess) -> list[str]:
    return p.stderr.decode("utf-8", "replace").splitlines()


def one_line_error(p: subprocess.CompletedProcess, *expect: str, code: int = 2) -> str:
    """Assert exit `code`, exactly one stderr line, no traceback; the line holds every `expect`."""
    lines = stderr_lines(p)
    text = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert p.returncode == code, (p.returncode, text)
    assert len(lines) == 1, text
    for word in expect:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def no_control_bytes(raw: bytes) -> None:
    """Nothing a terminal would act on: no ESC, no other C0 but newline/tab, no C1 controls
    (as bytes or as UTF-8-encoded code points), no invalid UTF-8."""
    text = raw.decode("utf-8")          # raises on invalid UTF-8
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, (bad[:5], text[:400])
