"""The found side: entries of a Nydus image (through the reader) or of a mounted tree.

Metadata is collected by one walk; file contents are hashed by a thread pool, once per inode
(the codecs and hashers release the GIL), and folded in when the walk's futures complete.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import functools
import os
import stat
from typing import Callable

from ..errors import NydusfsError
from ..format.blob import new_hasher
from ..reader import Image, file_kind
from ..reader.chunkmap import ImageChunks, file_problem
from .compare import Difference, Entry
from .oracle import FS_KINDS, READ, hash_file, shared_digest, shared_int

Tick = Callable[[int], None]
NO_XATTRS: dict[bytes, bytes] = {}   # shared by every entry without xattrs; never modified


# Digests in flight at once: enough to keep the pool busy, few enough that a million small
# files do not become a million queued futures (about 1 KB each).
IN_FLIGHT = 256
# A mounted tree's files above this size are hashed only once the layers say the same size:
# a hole nothing backs (a corrupt size) would otherwise be read for ever.
DEFER_ABOVE = 64 << 20


class Hashing:
    """Content digests keyed by inode identity, each computed once on a shared pool.

    At most IN_FLIGHT digests are queued; finished ones keep only their digest. A file whose
    size its image cannot back (see `Image.backed_bound`) is deferred: it is hashed in `fill`
    only when the expected side has a file of the same size there, so a crafted size costs
    nothing but a `size` difference."""

    def __init__(self, pool: cf.Executor, tick: Tick = lambda n: None) -> None:
        self.pool = pool
        self.tick = tick
        self.pending: dict[object, cf.Future] = {}
        self.results: dict[object, bytes | str] = {}
        self.deferred: dict[object, tuple[Callable[[], bytes | str], int]] = {}
        self.files = 0
        self.bytes = 0

    def submit(self, key: object, fn: Callable[[], bytes | str], size: int,
               defer: bool = False) -> None:
        if key in self.results or key in self.pending or key in self.deferred:
            return
        if defer:
            self.deferred[key] = (fn, size)
            return
        self.files += 1
        self.bytes += size
        if size == 0:  # no data to read: cheaper here than as a queued future
            self.results[key] = self._run(fn, size)
            return
        while len(self.pending) >= IN_FLIGHT:
            self._collect(next(iter(self.pending)))
        self.pending[key] = self.pool.submit(self._run, fn, size)

    def _collect(self, key: object) -> None:
        self.results[key] = self.pending.pop(key).result()

    def _run(self, fn: Callable[[], bytes | str], size: int) -> bytes | str:
        try:
            return fn()
        finally:
            self.tick(1)

    def wait(self) -> None:
        while self.pending:
            self._collect(next(iter(self.pending)))

    def take(self, key: object, confirmed: bool, keep: bool) -> bytes | str | None:
        """The digest of one inode, for a comparison that goes entry by entry: waited for if
        still in flight, and let go unless `keep` (more names of the inode are to come). A
        deferred file is hashed only when `confirmed` (the expected side has a file of its
        size there); unconfirmed, it stays deferred for its other names if `keep`."""
        job = self.deferred.get(key)
        if job is not None:
            if not confirmed:
                if not keep:
                    del self.deferred[key]
                return None
            del self.deferred[key]
            self.submit(key, *job)
        if key in self.pending:
            self._collect(key)
        return self.results.get(key) if keep else self.results.pop(key, None)

    def run_deferred(self, found: dict[bytes, Entry], expected: dict[bytes, Entry]) -> None:
        """Hash the deferred files whose size the expected side confirms (once per inode)."""
        jobs = []
        for path, e in found.items():
            job = self.deferred.get(e.link) if e.kind == "file" else None
            x = expected.get(path)
            if job is not None and x is not None and x.kind == "file" and x.size == e.size:
                del self.deferred[e.link]
                self.submit(e.link, *job)
                jobs.append(e.link)
        self.deferred.clear()
        if jobs:
            self.fill(found)

    def fill(self, entries: dict[bytes, Entry], expected: dict[bytes, Entry] | None = None) -> None:
        """Put the digests into the entries; finished digests are then let go (each entry keeps
        its own). With `expected`, deferred files are hashed first where the sizes agree."""
        if expected is not None:
            self.run_deferred(entries, expected)
        self.wait()
        for e in entries.values():
            if e.kind == "file" and e.link in self.results:
                e.digest = self.results[e.link]
        self.results.clear()


# --- a Nydus image through the reader -------------------------------------------------------------

def image_digest(image: Image, ino: int, size: int, algo: str) -> bytes | str:
    """Digest of the file's bytes read chunk by chunk, each chunk checked against its own
    digest; a chunk that cannot be read or does not verify makes the content 'unreadable'
    (a difference, not an error)."""
    h = new_hasher(algo)
    step = image.chunk_size or READ
    off = 0
    try:
        while off < size:
            data = image.read(ino, off, step, verify=True)
            if not data:
                return f"short read at offset {off} of {size}"
            h.update(data)
            off += len(data)
    except NydusfsError as e:  # BlobError mostly; FormatError for a broken chunk table
        return str(e)
    return shared_digest(h.digest())


CHUNKS_EXPECTED = "chunks that tile the file and agree with the blob table and each other"


class ChunkAudit:
    """The structural claims of the image's chunk records (reader/chunkmap.py), as 'chunks'
    differences: per file, and across the whole image once every file was added."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.whole = ImageChunks(image)
        self.found: list[Difference] = []

    def file(self, path: bytes, ino: int) -> None:
        try:
            chunks = self.image.chunks(ino)
            problem = file_problem(self.image, ino)
        except NydusfsError as e:
            self.found.append(Difference(path, "chunks", CHUNKS_EXPECTED, str(e)))
            return
        if problem is not None:
            self.found.append(Difference(path, "chunks", CHUNKS_EXPECTED, problem[1]))
        for c in chunks:
            self.whole.add(path, c)

    def differences(self) -> list[Difference]:
        return self.found + [Difference(path, "chunks", CHUNKS_EXPECTED, message)
                             for path, _, message in self.whole.problems()]


def chunk_differences(image: Image) -> list[Difference]:
    """The 'chunks' differences of every regular file of the image."""
    audit = ChunkAudit(image)
    for path, ino in image.walk():
        if image.inode(ino).is_reg:
            audit.file(path, ino)
    return audit.differences()


def walk_image(image: Image, hashing: Hashing | None,
               algo: str = "blake3") -> tuple[dict[bytes, Entry], list[Difference]]:
    """Entries of the image's paths, and the directories whose names are out of order (the
    chunk records are audited apart: `chunk_differences`)."""
    entries: dict[bytes, Entry] = {}
    problems: list[Difference] = []
    for path, ino in image.walk():
        entries[path] = image_entry(image, path, ino, hashing, algo, problems)
    return entries, problems


def image_entry(image: Image, path: bytes, ino: int, hashing: Hashing | None, algo: str,
                problems: list[Difference]) -> Entry:
    """The Entry of one path of the image; its content is submitted to `hashing`, and an
    out-of-order directory is added to `problems`."""
    node = image.inode(ino)
    kind = file_kind(node.mode)
    e = Entry(kind=kind, mode=shared_int(stat.S_IMODE(node.mode)), uid=shared_int(node.uid),
              gid=shared_int(node.gid), mtime_ns=shared_int(node.mtime * 1_000_000_000 + node.mtime_nsec),
              nlink=node.nlink,
              xattrs=dict(image.xattrs(ino)) or NO_XATTRS,
              # compact v6 inodes keep no mtime of their own
              precision="ns" if image.keeps_mtime(ino) else None)
    if kind == "dir":
        problems.extend(_dir_problems(image, path, ino))
    else:
        e.link = image.link_key(ino)
    if kind == "file":
        e.size = node.size
        if hashing is not None:
            size = node.size
            hashing.submit(e.link, functools.partial(image_digest, image, ino, size, algo), size,
                           defer=size > image.backed_bound(ino))
    elif kind == "symlink":
        e.target = image.readlink(ino)
        e.size = node.size
    elif kind in ("char", "block"):
        e.rdev = (os.major(node.rdev), os.minor(node.rdev))
    return e


def _dir_problems(image: Image, path: bytes, ino: int) -> list[Difference]:
    """Lookups (RAFS v5, EROFS) binary-search the names in their on-disk order, so that order
    must be strictly ascending: a name out of place, or twice, is listed but not found. Checked
    on the order instead of looking every name up, which would decode each block again."""
    names = [n for n, _ in image.list_dir(ino)]
    bad = [f"{os.fsdecode(a)!r} before {os.fsdecode(b)!r}" for a, b in zip(names, names[1:], strict=False) if a >= b]
    if not bad:
        return []
    return [Difference(path, "entries", "names in strictly ascending byte order", bad[:10])]


# --- a mounted tree (nydusfs's own mount, or any other) -------------------------------------------

def path_digest(full: bytes, algo: str) -> bytes | str:
    """Content digest of a file of the mounted tree, or the read error as text (a difference)."""
    try:
        return hash_file(full, algo)
    except OSError as e:
        return f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror}"


def _xattrs(full: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            return {}
        raise
    out = {}
    for n in names:
        out[os.fsencode(n)] = os.getxattr(full, n, follow_symlinks=False)
    return out


def walk_tree(top: str, hashing: Hashing | None, algo: str = "blake3") -> tuple[dict[bytes, Entry], list[Difference]]:
    """Entries of a mounted (or any) directory tree, as the kernel shows it: readdir lists the
    names, lstat looks each one up; a listed name that cannot be looked up is an 'entries'
    difference of its directory."""
    root = os.fsencode(top)
    entries: dict[bytes, Entry] = {}
    problems: list[Difference] = []
    stack: list[bytes] = [b"/"]
    try:
        root_st = os.lstat(root)
    except OSError as e:
        raise NydusfsError(f"{top}: cannot look at the mounted tree: {e.strerror}") from None
    entries[b"/"] = _fs_entry(root, root_st, hashing, algo)
    while stack:
        path = stack.pop()
        full_dir = root + (b"" if path == b"/" else path)
        try:
            names = sorted(os.listdir(full_dir))
        except OSError as e:
            problems.append(Difference(path, "entries", "a readable directory", f"readdir: {e.strerror}"))
            continue
        base = b"" if path == b"/" else path
        subdirs = []
        lost = []
        for name in names:
            child = base + b"/" + name
            full = full_dir + b"/" + name
            try:
                st = os.lstat(full)
                entries[child] = entry = _fs_entry(full, st, hashing, algo)
            except OSError as err:
                lost.append(f"{os.fsdecode(name)}: {err.strerror}")
                continue
            if entry.kind == "dir":
                subdirs.append(child)
        if lost:
            problems.append(Difference(path, "entries", "every listed name can be looked up", lost))
        stack.extend(reversed(subdirs))
    return entries, problems


def _fs_entry(full: bytes, st: os.stat_result, hashing: Hashing | None, algo: str) -> Entry:
    kind = FS_KINDS.get(stat.S_IFMT(st.st_mode), "unknown")
    e = Entry(kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
              mtime_ns=st.st_mtime_ns, nlink=st.st_nlink, xattrs=_xattrs(full))
    if kind != "dir":
        e.link = ("fs", st.st_dev, st.st_ino)
    if kind == "file":
        e.size = st.st_size
        if hashing is not None:
            hashing.submit(e.link, lambda: path_digest(full, algo), st.st_size,
                           defer=st.st_size > DEFER_ABOVE)
    elif kind == "symlink":
        e.target = os.readlink(full)
        e.size = st.st_size
    elif kind in ("char", "block"):
        e.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return e
