#!/usr/bin/env python3
"""Compare a directory tree (e.g. a mounted image) with a reference tree, every field.

Fields: type, mode (with setuid/setgid/sticky), uid, gid, size (not for directories), content
sha256, symlink target, rdev, nlink (not for directories), hardlink identity (which paths share
an inode), xattrs (bytes; security.selinux ignored), mtime (whole seconds: `mtime`, the
nanoseconds: `mtime_ns`). Names are bytes end to end.

  python3 tools/treediff.py REFERENCE TREE [--json FILE] [--no-content]
Exit 0 when equal, 1 when different.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import stat
import sys

IGNORED_XATTRS = {b"security.selinux"}
FIELDS = ("missing", "extra", "type", "mode", "uid", "gid", "size", "content", "symlink", "rdev",
          "nlink", "hardlinks", "xattrs", "mtime", "mtime_ns", "error")


def _xattrs(path: bytes) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        if os.fsencode(n) in IGNORED_XATTRS:
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False).hex()
        except OSError as e:
            out[n] = f"<{e.strerror}>"
    return out


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while blk := f.read(1 << 20):
            h.update(blk)
    return h.hexdigest()


def scan(root: str | bytes, content: bool = True) -> dict[bytes, dict]:
    """path (bytes, relative, b'' for the root) -> record of every compared field."""
    root = os.fsencode(root)
    recs: dict[bytes, dict] = {}
    inodes: dict[tuple, list[bytes]] = collections.defaultdict(list)
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        try:
            st = os.lstat(full)
        except OSError as e:
            recs[rel] = {"error": e.strerror}
            continue
        kind = stat.S_IFMT(st.st_mode)
        r = {"type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                      stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
                      stat.S_IFSOCK: "socket"}.get(kind, "?"),
             "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid,
             "mtime": st.st_mtime_ns // 10**9, "mtime_ns": st.st_mtime_ns % 10**9,
             "xattrs": _xattrs(full)}
        if kind != stat.S_IFDIR:
            r["size"] = st.st_size
            r["nlink"] = st.st_nlink
            if st.st_nlink > 1:
                inodes[(st.st_dev, st.st_ino)].append(rel)
        if kind == stat.S_IFREG and content:
            try:
                r["content"] = _digest(full)
            except OSError as e:
                r["content"] = f"<{e.strerror}>"
        elif kind == stat.S_IFLNK:
            r["symlink"] = os.readlink(full)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            r["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        recs[rel] = r
        if kind == stat.S_IFDIR:
            try:
                names = os.listdir(full)
            except OSError as e:
                r["error"] = e.strerror
                continue
            stack.extend(os.path.join(rel, n) if rel else n for n in names)
    for paths in inodes.values():
        group = sorted(paths)
        for p in paths:
            recs[p]["hardlinks"] = group
    for r in recs.values():
        if r.get("nlink", 1) > 1:
            r.setdefault("hardlinks", [])
    return recs


def compare(ref: dict, got: dict, ignore=()) -> dict:
    """{field: [(path, expected, found), ...]} for every difference."""
    diffs: dict[str, list] = {f: [] for f in FIELDS}
    for p, r in ref.items():
        g = got.get(p)
        if g is None:
            diffs["missing"].append((p, r["type"], None))
            continue
        for f in FIELDS[2:]:
            if f in ignore:
                continue
            if r.get(f) != g.get(f):
                diffs[f].append((p, r.get(f), g.get(f)))
    for p in got:
        if p not in ref:
            diffs["extra"].append((p, None, got[p].get("type")))
    return {f: v for f, v in diffs.items() if v}


def summary(diffs: dict, examples: int = 3) -> dict:
    """Counts per field and a few examples (JSON-friendly)."""
    def show(v):
        if isinstance(v, bytes):
            return os.fsdecode(v)
        if isinstance(v, list):
            return [show(x) for x in v]
        return v
    return {f: {"count": len(v), "examples": [[show(p), show(a), show(b)] for p, a, b in v[:examples]]}
            for f, v in diffs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference")
    ap.add_argument("tree")
    ap.add_argument("--json", help="write every difference to this file")
    ap.add_argument("--no-content", action="store_true")
    ap.add_argument("--ignore", nargs="*", default=[], help="fields not to compare")
    a = ap.parse_args()
    d = compare(scan(a.reference, not a.no_content), scan(a.tree, not a.no_content), a.ignore)
    s = summary(d)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary(d, examples=10**9), f, indent=1)
    for f, v in s.items():
        print(f"{f:<10} {v['count']:>6}  e.g. {v['examples'][0]}")
    print("equal" if not d else "DIFFERENT")
    return 1 if d else 0


if __name__ == "__main__":
    sys.exit(main())
