"""The reference side of `nydusfs check`: what a stack of OCI layers holds once applied.

This is the oracle the image is judged against, so it is written apart from the merger and from
create's tar ingestion, and kept small enough to read in one sitting. Each layer is streamed
once (stdlib `tarfile`, or a walk of an untarred directory) into a changeset; changesets are
then applied lowest first to an in-memory tree, following the OCI image-spec layer rules:

* whiteouts (`.wh.NAME`) and opaque markers (`.wh..wh..opq`) hide lower content only, whatever
  their position in the tar, so a layer's whiteouts are applied before its entries; a whiteout
  never creates anything, and no `.wh.` entry is ever added to the tree, bottom layer included;
* an entry over an existing path: directory over directory replaces the attributes (mode, owner,
  mtime, xattrs) and keeps the children; anything else removes the old path and its subtree;
* parent paths are joined inside the root as umoci and containerd do: a symlink on the way is
  followed (a dangling one to where it points), a non-directory on the way is an error;
* a directory a layer only implies (parent of a member, no entry of its own) keeps the lower
  layer's metadata; one no layer ever names has unspecified metadata (None) and only its type
  and entries are compared;
* a hard link names the node its target names at that point of the tar (lower layers included),
  takes no attributes from its own header, and a later entry replacing the target does not
  change it; duplicates are applied in order, so the last one wins.

Regular file contents are hashed while streaming; only digests are kept.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
import tarfile
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import BinaryIO, Callable, Mapping

from ..errors import LayerError
from ..format.blob import new_hasher
from ..util.limits import MAX_PATH, NotRegularFileError, open_regular
from ..util.streams import open_decompressed
from .compare import Entry
from .tarframe import TarFrame

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
READ = 1 << 20
NO_XATTRS: dict[bytes, bytes] = {}   # shared by every node without xattrs; never modified

Parts = tuple[bytes, ...]


@dataclasses.dataclass(slots=True)
class Node(Entry):
    """One inode of the reference tree. A hard link is the same Node under several names.
    Attributes left None were said by no layer (directories only implied by their children).

    A Node is the Entry of its names once the tree is flattened (compare.flatten): the
    expected side is not a second object per path, and the tree's memory is the entries'.
    `size` is a regular file's size (its data is hashed into `digest`), `target` a symlink's,
    `rdev` a device's (major, minor)."""

    size: int = 0                                # a file's bytes; flatten sets a symlink's
    digest: bytes | None = None                  # a file's, when content is hashed
    children: dict[bytes, "Node"] | None = None  # directories


@dataclasses.dataclass(slots=True)
class Member:
    """One entry of a layer: a node to put at `path`, or a hard link to `link`."""

    path: Parts
    node: Node | None
    link: Parts | None
    name: bytes                                 # as the layer spells it, for messages
    offset: int | None                          # tar header offset


@dataclasses.dataclass(slots=True)
class Changeset:
    """One layer's entries and whiteouts. With `root` (the lowest layer), entries are applied
    to it as they are read and never kept: below the lowest layer there is nothing a whiteout
    could hide, so the order rule has nothing to reorder, and a layer of a million entries is
    not held twice (as entries and as the tree)."""

    source: str
    root: "Node | None" = None
    members: list[Member] = dataclasses.field(default_factory=list)
    # (directory, NAME to remove or None for opaque, member name, offset)
    whiteouts: list[tuple[Parts, bytes | None, bytes, int | None]] = dataclasses.field(default_factory=list)

    def add(self, path: Parts, name: bytes, offset: int | None, node: Node | None = None,
            link: Parts | None = None) -> None:
        """Record one entry; whiteout markers become whiteouts, never entries."""
        if sum(map(len, path)) + len(path) > MAX_PATH or (link and sum(map(len, link)) + len(link) > MAX_PATH):
            raise LayerError(self.source, f"path longer than {MAX_PATH} bytes (PATH_MAX)",
                             member=name[:200], offset=offset)
        if any(p.startswith(WHITEOUT) for p in path[:-1]):
            raise LayerError(self.source, "entry inside a whiteout marker", member=name, offset=offset)
        if path and path[-1].startswith(WHITEOUT):
            if self.root is None:  # in the lowest layer, a whiteout has nothing to hide
                target = None if path[-1] == OPAQUE else path[-1][len(WHITEOUT):]
                self.whiteouts.append((path[:-1], target, name, offset))
            return
        if self.root is not None:
            _apply_member(self.root, self, Member(path, node, link, name, offset))
        else:
            self.members.append(Member(path, node, link, name, offset))


def clean(name: bytes) -> Parts:
    """Path components of a member name, resolved lexically and kept inside the root."""
    parts: list[bytes] = []
    for p in name.split(b"/"):
        if p == b".." and parts:
            parts.pop()
        elif p not in (b"", b".", b".."):
            parts.append(p)
    return tuple(parts)


# --- applying changesets ---------------------------------------------------------------------

def new_root() -> Node:
    return Node("dir", children={})


def apply(root: Node, cs: Changeset) -> None:
    """Apply one layer's changeset on top of `root` (modified in place)."""
    for where, gone, name, offset in cs.whiteouts:   # lower content only: before entries
        d = _resolve(root, where, cs, name, offset, create=False)
        if d is None:
            continue
        assert d.children is not None
        if gone is None:
            d.children.clear()
        else:
            d.children.pop(gone, None)
    for m in cs.members:
        _apply_member(root, cs, m)


def _apply_member(root: Node, cs: Changeset, m: Member) -> None:
    if not m.path:
        if m.node is None or m.node.kind != "dir":
            raise LayerError(cs.source, "the root can only be a directory", member=m.name,
                             offset=m.offset)
        _take_attributes(root, m.node)
        return
    parent = _resolve(root, m.path[:-1], cs, m.name, m.offset, create=True)
    assert parent is not None and parent.children is not None
    leaf = m.path[-1]
    old = parent.children.get(leaf)
    if m.link is not None:
        d = _resolve(root, m.link[:-1], cs, m.name, m.offset, create=False) if m.link else None
        target = d.children.get(m.link[-1]) if d is not None and d.children is not None else None
        if target is None:
            raise LayerError(cs.source, f"hard link to {os.fsdecode(b'/'.join(m.link))!r}, "
                             "which does not exist at this point", member=m.name, offset=m.offset)
        if target.kind == "dir":
            raise LayerError(cs.source, "hard link to a directory", member=m.name, offset=m.offset)
        if old is not None and old.kind == "dir" and _holds(old, target):
            # unpacking removes the directory first, and the target with it
            raise LayerError(cs.source, "hard link over the directory that holds its target",
                             member=m.name, offset=m.offset)
        parent.children[leaf] = target
    elif m.node is not None and m.node.kind == "dir" and old is not None and old.kind == "dir":
        _take_attributes(old, m.node)
    else:
        assert m.node is not None
        parent.children[leaf] = m.node


def _holds(d: Node, node: Node) -> bool:
    """Whether `node` is somewhere below directory `d`."""
    stack = [d]
    while stack:
        for child in (stack.pop().children or {}).values():
            if child is node:
                return True
            if child.kind == "dir":
                stack.append(child)
    return False


def _take_attributes(d: Node, new: Node) -> None:
    d.mode, d.uid, d.gid, d.mtime_ns, d.xattrs = new.mode, new.uid, new.gid, new.mtime_ns, new.xattrs


MAX_HOPS = 255  # symlinks followed in one path, as filepath-securejoin allows


def _resolve(root: Node, parts: Parts, cs: Changeset, name: bytes, offset: int | None,
             create: bool) -> Node | None:
    """The directory a member's parent path names, joined inside the root the way umoci
    (securejoin) and containerd (continuity RootPath) do: symlinks on the way are followed,
    absolute targets from the root, '..' never above it. With `create`, missing directories
    are made (implied, metadata unknown), also where a dangling symlink points; a
    non-directory in the way is an error, as it is for those extractors. Without `create`,
    a path that leads nowhere gives None."""
    trail = [root]                 # resolved directories from the root, for '..'
    lengths = [0]                  # bytes of each resolved path
    todo = list(reversed(parts))   # next component last
    hops = 0
    while todo:
        p = todo.pop()
        if p in (b"", b"."):
            continue
        if p == b"..":
            if len(trail) > 1:
                trail.pop()
                lengths.pop()
            continue
        d = trail[-1]
        assert d.children is not None
        child = d.children.get(p)
        if child is not None and child.kind == "symlink" and child.target:
            hops += 1
            if hops > MAX_HOPS:
                raise LayerError(cs.source, "too many levels of symbolic links in the parent path",
                                 member=name, offset=offset)
            target = child.target or b""
            if target.startswith(b"/"):
                trail, lengths = [root], [0]
            todo.extend(reversed(target.split(b"/")))
            continue
        if child is None:
            if not create:
                return None
            child = d.children[p] = Node("dir", children={})
        elif child.kind != "dir":
            if not create:
                return None
            raise LayerError(cs.source, f"parent component {os.fsdecode(p)!r} is a {child.kind}, "
                             "not a directory", member=name, offset=offset)
        trail.append(child)
        lengths.append(lengths[-1] + 1 + len(p))
        if lengths[-1] > MAX_PATH:
            raise LayerError(cs.source, f"the parent path resolves (through symlinks) to more "
                             f"than {MAX_PATH} bytes (PATH_MAX)", member=name[:200], offset=offset)
    return trail[-1]


# --- tar layers -------------------------------------------------------------------------------

class _Forward(io.RawIOBase):
    """A forward-only view with tell/seek, so tarfile's random-access mode (which reads a
    member's data straight from the stream, without the stream mode's buffer copies) works on
    a decompressing stream: seeks only ever skip ahead."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self.pos
        if whence == 2 or pos < self.pos:
            raise io.UnsupportedOperation("backward seek in a layer stream")
        while self.pos < pos:
            if not self.read(min(pos - self.pos, READ)):
                break
        return self.pos


class _Counting(io.RawIOBase):
    """Counts bytes read from the layer file, for the progress bar."""

    def __init__(self, raw: BinaryIO, tick: Callable[[int], None]) -> None:
        self.raw = raw
        self.tick = tick

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = self.raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.tick(n)
        return n or 0


TAR_KINDS = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}


def _b(text: str) -> bytes:
    """tarfile decodes names and PAX values as UTF-8 with surrogateescape: back to the bytes."""
    return text.encode("utf-8", "surrogateescape")


MTIME_LIMIT = 1 << 64      # RAFS stores mtimes as unsigned 64-bit seconds


def _mtime_ns(cs: Changeset, ti: tarfile.TarInfo) -> int:
    """The member's mtime in ns. RAFS cannot store a date before 1970: create stores 0 for it
    and so does the reference; a time past 64 bits (or inf, nan) is an error in both."""
    exact = ti.pax_headers.get("mtime")
    value: Decimal | float | int = ti.mtime
    if exact is not None:  # tarfile turns it into a float, which loses nanoseconds
        try:
            value = Decimal(exact)
        except InvalidOperation:
            pass
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    if not finite or value >= MTIME_LIMIT:
        shown = exact[:40] if exact is not None else value
        raise LayerError(cs.source, f"mtime {shown!r} cannot be stored (RAFS keeps 0 to 2^64-1 "
                         "seconds)", member=_b(ti.name), offset=ti.offset)
    if value < 0:
        return 0
    if isinstance(value, Decimal):
        return int((value * 1_000_000_000).to_integral_value(rounding=ROUND_FLOOR))
    return int(value) * 1_000_000_000


def read_tar(path: str, hash_algo: str | None = "blake3",
             tick: Callable[[int], None] = lambda n: None, lowest: bool = False) -> Changeset:
    """Stream one layer tar (plain, gzip or zstd, detected by magic bytes) into a changeset
    (applied to a root of its own as it is read when `lowest`)."""
    cs = Changeset(path, new_root() if lowest else None)
    frame = TarFrame(path)          # the framing tarfile would forgive
    tf: tarfile.TarFile | None = None
    last: tarfile.TarInfo | None = None
    in_data = False
    try:
        try:
            fd = open_regular(path, "a layer")
        except NotRegularFileError as e:
            raise LayerError(path, e.detail) from None
        with open(fd, "rb") as raw:
            stream = open_decompressed(io.BufferedReader(_Counting(raw, tick), READ))  # type: ignore[type-var]
            fwd = _Forward(frame.watch(stream))
            tf = tarfile.open(fileobj=fwd, mode="r:", encoding="utf-8", errors="surrogateescape")
            # next() rather than iteration: tarfile keeps every member it returns in
            # tf.members (about 400 bytes each) for its random access, which is not used here
            while (last := tf.next()) is not None:
                tf.members.clear()  # type: ignore[attr-defined]
                in_data = True
                _tar_member(cs, tf, last, hash_algo)
                in_data = False
            # tarfile ends quietly at the first header it cannot parse: what follows the end
            # marker must be zero padding, else the layer is damaged
            end = fwd.tell()
            while True:
                rest = fwd.read(READ)
                if not rest:
                    break
                if rest.count(0) != len(rest):
                    raise LayerError(path, "unreadable tar header, or data after the end of the "
                                     "archive", offset=end - tarfile.BLOCKSIZE)
            frame.finish()
    except LayerError:
        raise
    except FileNotFoundError:
        raise LayerError(path, "no such file") from None
    except Exception as e:  # tarfile, codec (isal, zstandard) and I/O errors alike
        if not isinstance(e, (tarfile.TarError, EOFError, OSError, ValueError)) and \
                not type(e).__module__.startswith("zstandard"):
            raise
        if in_data and last is not None:
            raise LayerError(path, f"cannot read the member's data: {e}", member=_b(last.name),
                             offset=last.offset) from None
        after = f" (after member {last.name!r})" if last is not None else ""
        raise LayerError(path, f"cannot read the layer{after}: {e}",
                         offset=tf.offset if tf is not None else None) from None
    return cs


def _tar_member(cs: Changeset, tf: tarfile.TarFile, ti: tarfile.TarInfo, hash_algo: str | None) -> None:
    name = _b(ti.name)
    parts = clean(name)
    if ti.type == tarfile.LNKTYPE:
        cs.add(parts, name, ti.offset, link=clean(_b(ti.linkname)))
        return
    kind = TAR_KINDS.get(ti.type)
    if kind is None:
        raise LayerError(cs.source, f"unsupported tar entry type {ti.type!r}", member=name,
                         offset=ti.offset)
    xattrs = _pax_xattrs(ti.pax_headers) or NO_XATTRS
    node = Node(kind, mode=shared_int(ti.mode & 0o7777), uid=shared_int(ti.uid), gid=shared_int(ti.gid),
                mtime_ns=shared_int(_mtime_ns(cs, ti)), xattrs=xattrs)
    if kind == "dir":
        node.children = {}
    elif kind == "symlink":
        node.target = _b(ti.linkname)
    elif kind in ("char", "block"):
        node.rdev = (ti.devmajor, ti.devminor)
    elif kind == "file":
        node.size = ti.size
        if hash_algo and not (parts and parts[-1].startswith(WHITEOUT)):
            h = new_hasher(hash_algo)
            f = tf.extractfile(ti)
            assert f is not None
            while True:
                block = f.read(READ)
                if not block:
                    break
                h.update(block)
            node.digest = shared_digest(h.digest())
    cs.add(parts, name, ti.offset, node=node)


# --- untarred layers (a directory) -------------------------------------------------------------

FS_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket"}


def read_dir(path: str, hash_algo: str | None = "blake3",
             tick: Callable[[int], None] = lambda n: None, lowest: bool = False) -> Changeset:
    """Read an untarred layer the way a tar is read: lstat, readlink, xattrs, `.wh.` names as
    whiteouts. The directory itself stands for the root and is not an entry (its metadata is
    the extractor's, not the layer's). Names sharing an inode become hard links."""
    cs = Changeset(path, new_root() if lowest else None)
    top = os.fsencode(path)
    first: dict[tuple[int, int], Parts] = {}
    stack: list[Parts] = [()]
    try:
        while stack:
            parent = stack.pop()
            base = os.path.join(top, *parent) if parent else top
            subdirs = []
            for name in sorted(os.listdir(base)):
                parts = parent + (name,)
                full = os.path.join(base, name)
                st = os.lstat(full)
                kind = FS_KINDS.get(stat.S_IFMT(st.st_mode), "unknown")
                if name.startswith(WHITEOUT):
                    cs.add(parts, full, None)
                    continue
                if kind != "dir" and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in first:
                        cs.add(parts, full, None, link=first[key])
                        continue
                    first[key] = parts
                node = Node(kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                            mtime_ns=max(0, st.st_mtime_ns), xattrs=_fs_xattrs(full))
                if kind == "dir":
                    node.children = {}
                    subdirs.append(parts)
                elif kind == "symlink":
                    node.target = os.readlink(full)
                elif kind in ("char", "block"):
                    node.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
                elif kind == "file":
                    node.size = st.st_size
                    if hash_algo:
                        node.digest = hash_file(full, hash_algo)
                    tick(st.st_size)
                cs.add(parts, full, None, node=node)
            stack.extend(reversed(subdirs))
    except OSError as e:
        raise LayerError(path, f"cannot read: {e.strerror}", member=e.filename) from None
    return cs


def _fs_xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # ENOTSUP: a filesystem without xattrs holds none
        return {}
    out = {}
    for n in names:
        try:
            out[os.fsencode(n)] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile, or not readable by us
    return out


_EMPTY = {algo: new_hasher(algo).digest() for algo in ("blake3", "sha256")}


def shared_digest(digest: bytes) -> bytes:
    """The one object for the digest of empty content (common in layers; 65 bytes each)."""
    for empty in _EMPTY.values():
        if digest == empty:
            return empty
    return digest


_INTS: dict[int, int] = {}
SHARED_INTS = 1 << 16


def shared_int(value: int) -> int:
    """One object per value for the attributes layers repeat (mtimes, modes, ids): an int
    costs 28 to 40 bytes per entry, a shared one 8. At most SHARED_INTS values are kept (the
    table costs about 6 MB when full); past that, values are kept as they come."""
    if value < 257:   # preallocated by the interpreter
        return value
    found = _INTS.get(value)
    if found is not None:
        return found
    if len(_INTS) < SHARED_INTS:
        _INTS[value] = value
    return value


def hash_file(path: bytes | str, hash_algo: str) -> bytes:
    h = new_hasher(hash_algo)
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(READ)
            if not block:
                break
            h.update(block)
    return shared_digest(h.digest())


# --- the whole stack --------------------------------------------------------------------------

def read_layer(path: str, hash_algo: str | None = "blake3",
               tick: Callable[[int], None] = lambda n: None, lowest: bool = False) -> Changeset:
    if os.path.isdir(path):
        return read_dir(path, hash_algo, tick, lowest)
    return read_tar(path, hash_algo, tick, lowest)


def build(changesets: list[Changeset]) -> Node:
    """Apply the changesets lowest first; one read with `lowest` already holds its tree."""
    root = changesets[0].root if changesets and changesets[0].root is not None else new_root()
    for cs in changesets:
        if cs.root is None:
            apply(root, cs)
    return root


def reference(layers: list[str], hash_algo: str | None = "blake3") -> Node:
    """The tree the layers (lowest first) hold once applied."""
    return build([read_layer(p, hash_algo, lowest=i == 0) for i, p in enumerate(layers)])


def _pax_xattrs(pax: Mapping[str, str]) -> dict[bytes, bytes]:
    """xattrs of a PAX header: `SCHILY.xattr.NAME=value` (GNU tar, Go, containerd) and
    `LIBARCHIVE.xattr.NAME=base64` (bsdtar; NAME percent-encoded)."""
    import base64
    import urllib.parse

    out = {}
    for k, v in pax.items():
        if k.startswith("SCHILY.xattr."):
            out[_b(k[len("SCHILY.xattr."):])] = _b(v)
        elif k.startswith("LIBARCHIVE.xattr."):
            raw = _b(v)
            out[urllib.parse.unquote_to_bytes(k[len("LIBARCHIVE.xattr."):])] = \
                base64.b64decode(raw + b"=" * (-len(raw) % 4))
    return out
