"""Command-line inputs shared by create and merge: prefetch patterns and `--chunk-dict`."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import UsageError


def parse_chunk_dict(value: str | None) -> str | None:
    """`bootstrap=PATH` (upstream's form), or a bare path."""
    if value is None:
        return None
    kind, sep, path = value.partition("=")
    if not sep:
        return value
    if kind != "bootstrap" or not path:
        raise UsageError(f"--chunk-dict: expected bootstrap=FILE, found {value!r}")
    return path


def read_pattern_source(name: str, stdin: Any = None) -> bytes:
    """The bytes of `--prefetch-files NAME` (`-` is standard input)."""
    if name == "-":
        stream: Any = stdin or sys.stdin
        return stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"--prefetch-files: cannot read {name}: {e.strerror}") from None


def parse_patterns(text: bytes) -> tuple[list[bytes], list[str]]:
    """Prefetch patterns, one absolute path per line, as upstream reads them.

    Returns the patterns kept and a warning for each line left out (relative paths, and
    patterns already covered by an earlier pattern or one of its ancestors).
    """
    kept: list[bytes] = []
    seen: set[bytes] = set()
    warnings: list[str] = []
    for raw in text.split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        show = os.fsdecode(line)
        if not line.startswith(b"/"):
            warnings.append(f"prefetch pattern {show!r} is not an absolute path; ignored")
            continue
        norm = normalize(line)
        if norm in seen or any(a in seen for a in ancestors(norm)):
            warnings.append(f"prefetch pattern {show!r} is covered by an earlier pattern; ignored")
            continue
        seen.add(norm)
        kept.append(norm)
    return kept, warnings


def normalize(path: bytes) -> bytes:
    parts = [p for p in path.split(b"/") if p and p != b"."]
    return b"/" + b"/".join(parts)


def ancestors(path: bytes) -> list[bytes]:
    parts = [p for p in path.split(b"/") if p]
    return [b"/" + b"/".join(parts[:i]) for i in range(len(parts))]
