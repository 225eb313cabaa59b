"""Compare two path -> Entry maps (expected from the layers, found in the image or a mount).

Differences are data: one record per (path, field), with expected and found values already in
a form JSON and people can read. Nothing here raises on a difference.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .oracle import Node

# every kind of difference, in report order
FIELDS = ("missing", "extra", "type", "mode", "uid", "gid", "size", "content", "symlink", "rdev",
          "nlink", "hardlink", "xattr", "mtime", "entries", "chunks", "blob")
PRECISIONS = {"s": 1_000_000_000, "us": 1_000, "ns": 1}


@dataclasses.dataclass(slots=True)
class Entry:
    """One path as a side sees it. None means: this side does not say (not compared)."""

    kind: str
    mode: int | None = None           # permission bits (0o7777)
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    size: int | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: dict[bytes, bytes] | None = None
    nlink: int | None = None
    link: object = None               # hard-link identity (non-directories)
    digest: bytes | str | None = None  # content digest, or why it could not be read
    precision: str | None = "ns"      # finest mtime precision this side keeps (None: none)


@dataclasses.dataclass(frozen=True, slots=True)
class Difference:
    path: bytes                       # absolute path bytes; b"" for image-wide records (blob)
    field: str
    expected: Any
    found: Any
    xattr: bytes | None = None        # the attribute name, for field "xattr"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": show_path(self.path), "field": self.field}
        if self.xattr is not None:
            out["xattr"] = show_bytes(self.xattr)
        out["expected"] = self.expected
        out["found"] = self.found
        return out


# --- presentation of values (JSON-ready) ---------------------------------------------------------

def show_path(path: bytes) -> str:
    """Paths are bytes; non-UTF-8 bytes come out as lone surrogates (os.fsdecode)."""
    return os.fsdecode(path)


def show_bytes(raw: bytes) -> str:
    """Text when the bytes are printable UTF-8, else 'hex:...' (exact either way)."""
    try:
        text = raw.decode("utf-8")
        if text.isprintable() and not text.startswith("hex:"):
            return text
    except UnicodeDecodeError:
        pass
    return "hex:" + raw.hex()


def show_mtime(ns: int, precision: str) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    if precision == "s":
        return str(sec)
    if precision == "us":
        return f"{sec}.{frac // 1000:06d}"
    return f"{sec}.{frac:09d}"


def show_digest(d: bytes | str, algo: str) -> str:
    return f"{algo}:{d.hex()}" if isinstance(d, bytes) else f"unreadable: {d}"


# --- the reference tree as entries ---------------------------------------------------------------

def flatten(root: Node) -> dict[bytes, Entry]:
    """path -> Entry for every name of the reference tree; nlink is counted from the names.

    The nodes become the entries (a hard link's names share one), and each directory's
    children are let go once listed: the tree and a second set of entries are never both
    held."""
    count_names(root)
    out: dict[bytes, Entry] = {}
    todo = [(b"/", root)]
    while todo:
        path, n = todo.pop()
        as_entry(n)
        if n.kind == "dir":
            base = b"" if path == b"/" else path
            todo.extend((base + b"/" + name, child) for name, child in (n.children or {}).items())
            n.children = None
        out[path] = n
    return out


def count_names(root: Node) -> int:
    """Set each non-directory node's nlink to its number of names in the tree (call once,
    before `as_entry`); the number of paths, the root included."""
    paths = 1
    stack = [root]
    while stack:
        node = stack.pop()
        for child in (node.children or {}).values():
            paths += 1
            if child.kind == "dir":
                stack.append(child)
            else:
                child.nlink = (child.nlink or 0) + 1
    return paths


def as_entry(n: Node) -> Node:
    """A node of the counted tree as the Entry of its names (a directory before any of its
    children is let go): a directory's nlink from its subdirectories, a link identity."""
    if n.kind == "dir":
        n.nlink = 2 + sum(1 for c in (n.children or {}).values() if c.kind == "dir")
    else:
        n.link = id(n)
        if n.kind == "symlink":
            n.size = len(n.target or b"")
    return n


# --- comparison ---------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class Options:
    ignore: frozenset[str] = frozenset()          # field names
    ignore_xattrs: frozenset[bytes] = frozenset()  # xattr names (host-added ones)
    mtime_precision: str | None = None            # None: the finest the found side keeps
    digest_algo: str = "blake3"


def tree_order(path: bytes) -> bytes:
    """Sort key: DFS pre-order with name-sorted children, root first. Names hold no NUL, so
    with '/' as NUL a byte comparison orders by components (one bytes object per path, not a
    list of components)."""
    return path.replace(b"/", b"\0")


def _groups(entries: dict[bytes, Entry], others: dict[bytes, Entry]) -> dict[bytes, frozenset[bytes]]:
    """For every hard-linked path: the other names of its inode that both sides hold."""
    names: dict[object, int] = {}   # counted first: a list per inode costs ~100 bytes each
    for path, e in entries.items():
        if e.kind != "dir" and path in others:
            names[e.link] = names.get(e.link, 0) + 1
    by_key: dict[object, list[bytes]] = {}
    for path, e in entries.items():
        if e.kind != "dir" and names.get(e.link, 0) > 1 and path in others:
            by_key.setdefault(e.link, []).append(path)
    del names
    out = {}
    for paths in by_key.values():
        if len(paths) > 1:
            for p in paths:
                out[p] = frozenset(paths) - {p}
    return out


def compare(expected: dict[bytes, Entry], found: dict[bytes, Entry], opts: Options,
            extra: Iterable[Difference] = ()) -> list[Difference]:
    """Every difference between the two sides, in tree order, then `extra` (side-specific)."""
    out: list[Difference] = []
    ignore = opts.ignore
    exp_links = _groups(expected, found) if "hardlink" not in ignore else {}
    found_links = _groups(found, expected) if "hardlink" not in ignore else {}
    for path in sorted(expected.keys() | found.keys(), key=tree_order):
        e = expected.get(path)
        f = found.get(path)
        if f is None:
            assert e is not None
            if "missing" not in ignore:
                out.append(Difference(path, "missing", e.kind, None))
            continue
        if e is None:
            if "extra" not in ignore:
                out.append(Difference(path, "extra", None, f.kind))
            continue
        entry_differences(out, path, e, f, opts)
        if "hardlink" not in ignore and e.kind != "dir" and e.kind == f.kind:
            a, b = exp_links.get(path, frozenset()), found_links.get(path, frozenset())
            if a != b:
                out.append(Difference(path, "hardlink", sorted(map(show_path, a)),
                                      sorted(map(show_path, b))))
    out.extend(d for d in extra if d.field not in ignore)
    return out


def entry_differences(out: list[Difference], path: bytes, e: Entry, f: Entry, opts: Options) -> None:
    """The differences of one path both sides hold (all but 'hardlink'), added to `out`."""
    ignore = opts.ignore

    def diff(field: str, a: Any, b: Any, show: Any = None) -> None:
        if field in ignore or a is None or b is None or a == b:
            return
        if show is not None:
            a, b = show(a), show(b)
        out.append(Difference(path, field, a, b))

    same_kind = e.kind == f.kind
    if not same_kind:
        diff("type", e.kind, f.kind)
    if "symlink" not in (e.kind, f.kind):  # Linux keeps no mode for symlinks
        diff("mode", e.mode, f.mode, lambda m: f"{m:04o}")
    diff("uid", e.uid, f.uid)
    diff("gid", e.gid, f.gid)
    if same_kind:
        if e.kind == "file":
            diff("size", e.size, f.size)
            if "content" not in ignore and e.digest is not None and f.digest is not None \
                    and (e.digest != f.digest):
                out.append(Difference(path, "content", show_digest(e.digest, opts.digest_algo),
                                      show_digest(f.digest, opts.digest_algo)))
        elif e.kind == "symlink":
            diff("symlink", e.target, f.target, show_path)
            if e.target == f.target:  # else the target difference already says it
                diff("size", e.size, f.size)
        elif e.kind in ("char", "block"):
            diff("rdev", e.rdev, f.rdev, lambda r: f"{r[0]}:{r[1]}")
        diff("nlink", e.nlink, f.nlink)
    if "xattr" not in ignore and e.xattrs is not None and f.xattrs is not None:
        names = (e.xattrs.keys() | f.xattrs.keys()) - opts.ignore_xattrs
        for name in sorted(names):
            a, b = e.xattrs.get(name), f.xattrs.get(name)
            if a != b:
                out.append(Difference(path, "xattr", None if a is None else show_bytes(a),
                                      None if b is None else show_bytes(b), xattr=name))
    precision = opts.mtime_precision or f.precision
    if "mtime" not in ignore and precision and e.mtime_ns is not None and f.mtime_ns is not None:
        unit = PRECISIONS[precision]
        if e.mtime_ns // unit != f.mtime_ns // unit:
            out.append(Difference(path, "mtime", show_mtime(e.mtime_ns, precision),
                                  show_mtime(f.mtime_ns, precision)))


def counts(diffs: Iterable[Difference]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in diffs:
        out[d.field] = out.get(d.field, 0) + 1
    return {k: out[k] for k in FIELDS if k in out} | {k: v for k, v in out.items() if k not in FIELDS}
