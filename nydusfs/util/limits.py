"""Limits that keep small hostile inputs from costing unbounded memory or time (docs/limits.md).

One definition per limit; the ones a user may need to raise read an environment variable.
"""

from __future__ import annotations

import os
import re
import stat

from ..errors import NydusfsError

# Longest path (bytes, with its leading '/') an image or a layer may hold: Linux's PATH_MAX.
# Walks stop with a clear error past it, which also bounds directory depth (at most 2048).
MAX_PATH = 4096

# Largest bootstrap nydusfs inflates into memory (a gzip/zstd layer tarball's image/image.boot,
# a compressed ToC section). Plain bootstraps are mapped, not read, and are not limited.
BOOTSTRAP_ENV = "NYDUSFS_MAX_BOOTSTRAP"
DEFAULT_MAX_BOOTSTRAP = 512 << 20

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int | None:
    """Bytes from '123', '64K', '512M', '1G' (binary units, optional 'iB'/'B'); None if not a size."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    return int(m.group(1)) * _UNITS[m.group(2).lower()] if m else None


def max_bootstrap() -> int:
    """The bootstrap inflation limit: $NYDUSFS_MAX_BOOTSTRAP, else 512 MiB."""
    raw = os.environ.get(BOOTSTRAP_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_BOOTSTRAP
    value = parse_size(raw)
    if value is None:
        raise NydusfsError(f"{BOOTSTRAP_ENV}={raw!r}: not a size (use e.g. 512M, 2G, 1048576)")
    return value


class NotRegularFileError(NydusfsError):
    """An input that is a FIFO, socket, device or directory where a regular file is needed."""

    def __init__(self, path: str, what: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.detail = f"{what} must be a regular file, found a {kind}"
        super().__init__(f"{path}: {self.detail}")


def kind_name(mode: int) -> str:
    return {stat.S_IFDIR: "directory", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
            stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
            stat.S_IFLNK: "symlink"}.get(stat.S_IFMT(mode), "special file")


def open_regular(path: str | os.PathLike, what: str) -> int:
    """A read-only descriptor of `path`, refused unless it is a regular file.

    Opened with O_NONBLOCK so that a FIFO never blocks the open; fstat on the descriptor (not
    the name, which could change in between) decides; blocking mode is restored for reads.
    Raises OSError for files that cannot be opened, NotRegularFileError for the others.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(os.fspath(path), what, kind_name(st.st_mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def inside(path: str | os.PathLike, top: str | os.PathLike) -> bool:
    """Whether `path` (resolved) is `top` (resolved) or below it."""
    p = os.path.realpath(path)
    t = os.path.realpath(top)
    return p == t or p.startswith(t.rstrip("/") + "/")
