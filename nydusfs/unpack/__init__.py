"""`unpack`: the merged tree of an opened image as one OCI layer tar, streamed.

The core takes an opened reader `Image` (whatever it was opened from: a bootstrap with its blob
directories today, an image reference later) and a binary stream. Entries come in the reader's
walk order (depth first, children sorted by name bytes), so the same image always gives the
same bytes. File data is read through the reader chunk by chunk with every chunk's digest
checked; memory stays bounded by one chunk plus the reader's cache.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from typing import Protocol

from ..errors import NydusfsError
from ..reader import Image
from .tar import (
    BLK,
    CHR,
    DIR,
    END,
    FIFO,
    LINK,
    REG,
    SYMLINK,
    Entry,
    entry_header,
    padding,
)

READ_STEP = 1 << 20       # bytes asked of the reader at a time (a chunk is at most 16 MiB)


class Writable(Protocol):
    def write(self, raw: bytes, /) -> int: ...


@dataclasses.dataclass
class UnpackStats:
    entries: int = 0
    files: int = 0
    hardlinks: int = 0
    data_bytes: int = 0
    tar_bytes: int = 0
    sockets_skipped: list[bytes] = dataclasses.field(default_factory=list)


def show(path: bytes) -> str:
    """A path from the image for a message: printable ASCII as is, other bytes escaped."""
    return str(path)[2:-1]


def member_name(path: bytes, is_dir: bool) -> bytes:
    """Tar member name of an image path: b'/' -> b'./', b'/etc' -> b'./etc/' for a directory."""
    if path == b"/":
        return b"./"
    return b"." + path + (b"/" if is_dir else b"")


def unpack(image: Image, out: Writable, progress: Callable[[int], None] | None = None) -> UnpackStats:
    """Write the image's tree to `out` as a tar stream (pax format) and return what it held."""
    stats = UnpackStats()
    first_name: dict[object, bytes] = {}

    def emit(raw: bytes) -> None:
        out.write(raw)
        stats.tar_bytes += len(raw)

    for path, ino in image.walk():
        node = image.getattr(ino)
        fmt = stat.S_IFMT(node.mode)
        if fmt == stat.S_IFSOCK:
            # tar has no socket type; GNU tar leaves them out too
            stats.sockets_skipped.append(path)
            continue
        base = Entry(name=member_name(path, fmt == stat.S_IFDIR), kind=DIR,
                     mode=stat.S_IMODE(node.mode), uid=node.uid, gid=node.gid, mtime=node.mtime,
                     mtime_nsec=node.mtime_nsec, xattrs=tuple(sorted(image.xattrs(ino))))
        if fmt != stat.S_IFDIR and node.nlink > 1:
            key = image.link_key(ino)
            target = first_name.get(key)
            if target is not None:
                emit(entry_header(dataclasses.replace(base, kind=LINK, linkname=target)))
                stats.entries += 1
                stats.hardlinks += 1
                continue
            first_name[key] = base.name
        if fmt == stat.S_IFDIR:
            entry = base
        elif fmt == stat.S_IFLNK:
            entry = dataclasses.replace(base, kind=SYMLINK, linkname=image.readlink(ino))
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            entry = dataclasses.replace(base, kind=CHR if fmt == stat.S_IFCHR else BLK,
                                        devmajor=os.major(node.rdev), devminor=os.minor(node.rdev))
        elif fmt == stat.S_IFIFO:
            entry = dataclasses.replace(base, kind=FIFO)
        elif fmt == stat.S_IFREG:
            backed = image.backed_bound(ino)
            if node.size > backed:  # a declared hole nothing stores: zeros without end
                raise NydusfsError(f"{image.name}: {show(path)}: inode {ino} field size: expected at "
                                   f"most {backed} bytes (what its chunks can hold), found {node.size}")
            entry = dataclasses.replace(base, kind=REG, size=node.size)
        else:
            raise NydusfsError(f"{image.name}: {show(path)}: inode {ino} has file type "
                               f"0o{fmt:o}, which a tar cannot hold")
        emit(entry_header(entry))
        stats.entries += 1
        if fmt == stat.S_IFREG:
            stats.files += 1
            done = 0
            while done < node.size:
                try:
                    data = image.read(ino, done, min(READ_STEP, node.size - done), verify=True)
                except NydusfsError as e:  # name the file whose data could not be read
                    raise NydusfsError(f"{show(path)}: {e}") from None
                if not data:
                    raise NydusfsError(f"{image.name}: {show(path)}: data ends at {done} "
                                       f"of {node.size} bytes")
                emit(data)
                done += len(data)
                if progress is not None:
                    progress(len(data))
            stats.data_bytes += node.size
            emit(padding(node.size))
    emit(END)
    return stats
