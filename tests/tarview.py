"""What a single layer tar holds, read with the stdlib tarfile module (independent of the
project's own tar reader), and a field-by-field comparison with an image read by the reader."""

from __future__ import annotations

import os
import stat
import tarfile

from nydusfs.reader import Image


def _key(name: str) -> bytes:
    raw = os.fsencode(name)
    while raw.startswith(b"./"):
        raw = raw[2:]
    return b"/" + raw.strip(b"/") if raw.strip(b"/") else b"/"


def tar_view(path: str | os.PathLike) -> dict[bytes, dict]:
    """Path -> expected fields, last entry wins, hard links share their target's dict."""
    view: dict[bytes, dict] = {}
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            key = _key(m.name)
            if m.islnk():
                view[key] = view[_key(m.linkname)]
                continue
            mt = m.pax_headers.get("mtime")
            if mt and "." in mt:
                sec, frac = mt.split(".")
                mtime = (int(sec), int((frac + "000000000")[:9]))
            else:
                mtime = (int(m.mtime), 0)
            kind = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
                    tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
                    tarfile.FIFOTYPE: stat.S_IFIFO}.get(m.type, stat.S_IFREG)
            view[key] = {
                "mode": kind | m.mode, "uid": m.uid, "gid": m.gid, "mtime": mtime,
                "data": tf.extractfile(m).read() if m.isreg() else None,
                "symlink": os.fsencode(m.linkname) if m.issym() else None,
                "rdev": os.makedev(m.devmajor, m.devminor) if m.ischr() or m.isblk() else 0,
                "xattrs": {k[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape"):
                           v.encode("utf-8", "surrogateescape")
                           for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")},
            }
    return view


def compare(view: dict[bytes, dict], image: Image) -> list[str]:
    """Every difference between the tar's view and the image (empty list: equal)."""
    got = dict(image.walk())
    problems = []
    groups: dict[int, set] = {}
    for path, want in view.items():
        if path not in got:
            problems.append(f"{path!r}: missing")
            continue
        ino = got[path]
        n = image.inode(ino)
        for field in ("mode", "uid", "gid", "rdev"):
            if getattr(n, field) != want[field]:
                problems.append(f"{path!r}: {field} {getattr(n, field)} != {want[field]}")
        if (n.mtime, n.mtime_nsec) != want["mtime"]:
            problems.append(f"{path!r}: mtime {(n.mtime, n.mtime_nsec)} != {want['mtime']}")
        if want["data"] is not None:
            data = image.read(ino, 0, n.size + 1)
            if n.size != len(want["data"]) or data != want["data"]:
                problems.append(f"{path!r}: content differs ({n.size} vs {len(want['data'])} bytes)")
        if want["symlink"] is not None and image.readlink(ino) != want["symlink"]:
            problems.append(f"{path!r}: symlink {image.readlink(ino)!r} != {want['symlink']!r}")
        if dict(image.xattrs(ino)) != want["xattrs"]:
            problems.append(f"{path!r}: xattrs {dict(image.xattrs(ino))} != {want['xattrs']}")
        if not stat.S_ISDIR(n.mode):
            groups.setdefault(id(want), set()).add(image.link_key(ino))
            names = sum(1 for v in view.values() if v is want)
            if n.nlink != names:
                problems.append(f"{path!r}: nlink {n.nlink} != {names}")
    for _ident, keys in groups.items():
        if len(keys) != 1:
            problems.append(f"hard link group split into {len(keys)} inodes")
    for path, ino in got.items():
        if path not in view and path != b"/" and not image.inode(ino).implicit:
            problems.append(f"{path!r}: extra entry")
    return problems
