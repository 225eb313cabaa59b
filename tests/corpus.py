"""Layer tars built in code: a small builder plus one factory per edge case a real layer holds.

`Layer` appends entries in the order given (tar order matters for whiteouts and duplicates) and
renders them with the stdlib tarfile writer in PAX format (so long names, big ids, nanosecond
mtimes and binary xattrs survive). Names may be bytes that are not UTF-8.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import tarfile
from typing import Callable

import zstandard

MTIME = 1_700_000_000


def _name(path: bytes | str) -> str:
    return os.fsdecode(path) if isinstance(path, bytes) else path


class Layer:
    def __init__(self) -> None:
        self.entries: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def _info(self, path: bytes | str, kind: bytes, mode: int, uid: int, gid: int,
              mtime: float | str, xattrs: dict[bytes, bytes] | None) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(_name(path))
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        if isinstance(mtime, str):  # "sec.nanoseconds": exact, as a PAX record (floats round)
            ti.mtime = int(mtime.split(".")[0])
            ti.pax_headers = {"mtime": mtime}
        else:
            ti.mtime = mtime
        if xattrs:
            # tarfile writes pax_headers as str; surrogateescape carries arbitrary bytes through
            ti.pax_headers.update({
                "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                for k, v in xattrs.items()})
        return ti

    def dir(self, path: bytes | str, mode: int = 0o755, uid: int = 0, gid: int = 0,
            mtime: float | str = MTIME, xattrs: dict[bytes, bytes] | None = None) -> "Layer":
        self.entries.append((self._info(path, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs), None))
        return self

    def file(self, path: bytes | str, data: bytes = b"", mode: int = 0o644, uid: int = 0,
             gid: int = 0, mtime: float | str = MTIME, xattrs: dict[bytes, bytes] | None = None) -> "Layer":
        ti = self._info(path, tarfile.REGTYPE, mode, uid, gid, mtime, xattrs)
        ti.size = len(data)
        self.entries.append((ti, data))
        return self

    def symlink(self, path: bytes | str, target: bytes | str, mtime: float | str = MTIME,
                uid: int = 0, gid: int = 0) -> "Layer":
        ti = self._info(path, tarfile.SYMTYPE, 0o777, uid, gid, mtime, None)
        ti.linkname = _name(target)
        self.entries.append((ti, None))
        return self

    def hardlink(self, path: bytes | str, target: bytes | str, mtime: float | str = MTIME) -> "Layer":
        ti = self._info(path, tarfile.LNKTYPE, 0o644, 0, 0, mtime, None)
        ti.linkname = _name(target)
        self.entries.append((ti, None))
        return self

    def char(self, path: bytes | str, major: int, minor: int, mode: int = 0o644,
             mtime: float | str = MTIME) -> "Layer":
        ti = self._info(path, tarfile.CHRTYPE, mode, 0, 0, mtime, None)
        ti.devmajor, ti.devminor = major, minor
        self.entries.append((ti, None))
        return self

    def block(self, path: bytes | str, major: int, minor: int, mode: int = 0o660,
              mtime: float | str = MTIME) -> "Layer":
        ti = self._info(path, tarfile.BLKTYPE, mode, 0, 0, mtime, None)
        ti.devmajor, ti.devminor = major, minor
        self.entries.append((ti, None))
        return self

    def fifo(self, path: bytes | str, mode: int = 0o644, mtime: float | str = MTIME) -> "Layer":
        self.entries.append((self._info(path, tarfile.FIFOTYPE, mode, 0, 0, mtime, None), None))
        return self

    def whiteout(self, path: bytes | str) -> "Layer":
        """OCI removal marker for `path` (an empty regular file `.wh.<name>`)."""
        raw = os.fsencode(path)
        head, _, tail = raw.rpartition(b"/")
        return self.file((head + b"/" if head else b"") + b".wh." + tail, b"", mode=0o600)

    def opaque(self, directory: bytes | str) -> "Layer":
        raw = os.fsencode(directory).rstrip(b"/")
        return self.file((raw + b"/" if raw else b"") + b".wh..wh..opq", b"", mode=0o600)

    def raw(self, ti: tarfile.TarInfo, data: bytes | None = None) -> "Layer":
        self.entries.append((ti, data))
        return self

    def tar(self, fmt: int = tarfile.PAX_FORMAT) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                          errors="surrogateescape") as tf:
            for ti, data in self.entries:
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def write(self, path: str | os.PathLike, compression: str = "none",
              fmt: int = tarfile.PAX_FORMAT) -> pathlib.Path:
        raw = self.tar(fmt)
        if compression == "gzip":
            raw = gzip.compress(raw, mtime=0)
        elif compression == "zstd":
            raw = zstandard.ZstdCompressor(level=3).compress(raw)
        p = pathlib.Path(path)
        p.write_bytes(raw)
        return p


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, poorly compressible bytes (so chunks really compress differently)."""
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


# --- one factory per edge case of a single layer ----------------------------------------------

CHUNK = 0x10000  # the chunk size the corpus is meant to be built with (--chunk-size 0x10000)


def regular_files() -> Layer:
    return (Layer().dir("d").file("d/empty").file("d/one-chunk", pattern(CHUNK, 2))
            .file("d/chunk-plus-one", pattern(CHUNK + 1, 3))
            .file("d/multi", pattern(3 * CHUNK + 777, 4))
            .file("d/text", b"hello world\n" * 5000, mode=0o640, uid=1000, gid=1000))


def special_modes() -> Layer:
    return (Layer().dir("bin", mode=0o755).file("bin/suid", b"x", mode=0o4755)
            .file("bin/sgid", b"y", mode=0o2755).dir("tmp", mode=0o1777)
            .file("bin/all", b"z", mode=0o7777))


def links() -> Layer:
    long_target = "t/" + "x" * 300
    return (Layer().dir("l").file("l/target", b"content of target\n")
            .hardlink("l/hard1", "l/target").hardlink("l/hard2", "l/target")
            .symlink("l/sym", "target").symlink("l/dangling", "/nowhere/at/all")
            .symlink("l/long", long_target))


def devices() -> Layer:
    return (Layer().dir("dev").char("dev/null", 1, 3).char("dev/big", 300, 70000)
            .block("dev/loop0", 7, 0).fifo("dev/pipe"))


def ids_and_times() -> Layer:
    return (Layer().file("bigids", b"ids", uid=(1 << 21) + 5, gid=(1 << 32) - 2)
            .file("nsec", b"t", mtime="1700000000.123456789")
            .file("old", b"o", mtime=1))


def xattrs() -> Layer:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    return (Layer().file("cap", b"bin", xattrs={b"security.capability": cap})
            .file("user", b"u", xattrs={b"user.k": b"v", b"user.bin": b"\x00\x01\xff\x00",
                                        b"trusted.t": b"y"})
            .dir("xdir", xattrs={b"user.dir": b"1"}))


def names() -> Layer:
    return (Layer().dir(b"n\xff\xfe").file(b"n\xff\xfe/\xe9t\xe9", b"latin-1 name")
            .file("n" * 200 + "/" + "m" * 150, b"long path")  # implied parent, long name
            .file("./dotslash", b"dot slash prefix")
            .file("sp ace/tab\there", b"spaces"))


def implied_parents() -> Layer:
    return Layer().file("a/b/c/deep", b"no parents in the tar")


def duplicates() -> Layer:
    return (Layer().file("dup", b"first").file("dup", b"second wins", mode=0o600)
            .dir("dd", mode=0o700).dir("dd", mode=0o755))


def whiteouts() -> Layer:
    return Layer().dir("w").whiteout("w/gone").opaque("w").file("w/new", b"n")


def empty() -> Layer:
    return Layer()


def chmod_only() -> Layer:
    return Layer().dir("etc", mode=0o700, uid=5)


EDGE_CASES: dict[str, Callable[[], Layer]] = {
    "regular_files": regular_files, "special_modes": special_modes, "links": links,
    "devices": devices, "ids_and_times": ids_and_times, "xattrs": xattrs, "names": names,
    "implied_parents": implied_parents, "duplicates": duplicates, "whiteouts": whiteouts,
    "empty": empty, "chmod_only": chmod_only,
}


def everything() -> Layer:
    """All single-layer edge cases in one layer (names do not collide)."""
    out = Layer()
    for name, factory in EDGE_CASES.items():
        if name in ("whiteouts",):
            continue
        out.entries.extend(factory().entries)
    return out
