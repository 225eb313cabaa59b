"""The reader's interface, and its version-independent part: path walking, reads through the
blob store.

`Image` is the public surface ImageV5 and ImageV6 implement. Every consumer (mount, check,
dump, merge's loader, regions) uses only what it declares; the on-disk superblocks and tables
stay inside the version's reader.
"""

from __future__ import annotations

import abc
import bisect
import functools
import os
import stat
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from ..errors import FormatError, InvalidInodeError, NotADirError, NotFoundError
from ..format.layer import LayerLayout
from ..format.record import Record
from ..format.v5 import ChunkInfo
from ..util.limits import MAX_PATH
from .chunkmap import file_problem
from .model import BlobInfo, Inode, Region

if TYPE_CHECKING:
    from .blobs import BlobStore

F = TypeVar("F", bound=Callable[..., Any])


def names_file(method: F) -> F:
    """Attach the bootstrap's name to format errors raised below a public method."""

    @functools.wraps(method)
    def wrapper(self: "Image", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except FormatError as e:
            raise e.in_file(self.name) from None

    return wrapper  # type: ignore[return-value]


class Image(abc.ABC):
    """A read-only view of one bootstrap. Thread-safe: decoding reads an immutable buffer and
    the caches are guarded by `functools.lru_cache` (which locks).

    `inode(ino)`, `readdir(ino)` (children as (name, ino), sorted by name bytes, without '.'
    and '..') and `chunks(ino)` are cached views of the version's `_load_*` primitives."""

    name: str                     # the bootstrap's path, as given
    layout: LayerLayout           # where the bootstrap sits in its file (bare, layout A/B...)
    version: int
    root_ino: int
    chunk_size: int
    flags: int                    # the superblock's RafsSuperFlags
    compressor: str
    digester: str
    blobs: list[BlobInfo]
    prefetch: list[int]
    inode_count: int
    blob_store: BlobStore | None  # attached by open_image()
    inode: functools._lru_cache_wrapper[Inode]
    readdir: functools._lru_cache_wrapper[tuple[tuple[bytes, int], ...]]
    chunks: functools._lru_cache_wrapper[tuple[ChunkInfo, ...]]
    chunk_map_problem: functools._lru_cache_wrapper[str | None]
    tarfs = False                 # RAFS v6 tarfs: chunks are the inode's block addresses
    # set by image.nydus.open_reader for image references: blob id -> its RangeReader, and
    # whether those reads go over the network (a registry)
    blob_ranges: Callable[[str], Any] | None = None
    remote_blobs = False

    def __init__(self, name: str, buf: Any, layout: LayerLayout, keepalive: Any, stem: str) -> None:
        """`stem`: the file-name stem that blobs stored inside the layer file take as their id."""
        self.name = name
        self.buf = buf
        self.layout = layout
        self._keepalive = keepalive
        self.blob_store = None
        self._lock = threading.Lock()
        self.inode = functools.lru_cache(maxsize=65536)(self._load_inode)
        self.readdir = functools.lru_cache(maxsize=4096)(self._load_children)
        self.chunks = functools.lru_cache(maxsize=4096)(self._load_chunks)
        self.chunk_map_problem = functools.lru_cache(maxsize=4096)(self._chunk_map_problem)
        try:
            self._open(stem)
        except FormatError as e:
            raise e.in_file(name) from None

    # --- version-specific primitives -------------------------------------------------------
    @abc.abstractmethod
    def _open(self, stem: str) -> None:
        """Decode and check the superblock and tables; fill in the attributes above."""

    @abc.abstractmethod
    def _load_inode(self, ino: int) -> Inode: ...

    @abc.abstractmethod
    def _load_children(self, ino: int) -> tuple[tuple[bytes, int], ...]: ...

    @abc.abstractmethod
    def _load_chunks(self, ino: int) -> tuple[ChunkInfo, ...]: ...

    def bound_inode_cache(self, inodes: int) -> None:
        """Keep at most `inodes` decoded inodes (65,536 by default); call before any use."""
        self.inode = functools.lru_cache(maxsize=inodes)(self._load_inode)

    def list_dir(self, ino: int) -> tuple[tuple[bytes, int], ...]:
        """`readdir` without its cache, for whole-image walks that read each directory once."""
        return self._load_children(ino)

    @abc.abstractmethod
    def lookup(self, parent: int, name: bytes) -> int:
        """The inode of `name` in directory `parent`; NotFoundError if there is none."""

    @abc.abstractmethod
    def readlink(self, ino: int) -> bytes: ...

    @abc.abstractmethod
    def xattrs(self, ino: int) -> list[tuple[bytes, bytes]]: ...

    @abc.abstractmethod
    def superblocks(self) -> list[Record]:
        """The superblock record(s): v5 one, v6 the EROFS superblock and the RAFS extension."""

    @abc.abstractmethod
    def records(self) -> list[tuple[str, int, Record]]:
        """(structure, file offset, record) of the superblock area and tables, for dump."""

    @abc.abstractmethod
    def table_spans(self) -> list[tuple[str, int, int]]:
        """(structure, file offset, size) of the variable-size tables and areas, for dump."""

    @abc.abstractmethod
    def regions(self) -> Iterator[Region]:
        """Every decoded structure re-encoded at its file offset (reader/regions.py)."""

    def flat_data(self, ino: int) -> bytes | None:
        """Content stored inside the bootstrap itself (EROFS plain files), else None."""
        return None

    def keeps_mtime(self, ino: int) -> bool:
        """Whether the inode stores its own mtime (RAFS v6 compact inodes do not)."""
        return True

    def table_chunks(self) -> Iterator[tuple[int, ChunkInfo]]:
        """(file offset, record) of every chunk record kept apart from the inodes (the RAFS v6
        chunk table), one at a time; RAFS v5 keeps them in the inodes: none."""
        return iter(())

    def chunk_place_problem(self, ino: int) -> tuple[int, str] | None:
        """(chunk number, what disagrees) where the inode records its chunks' places apart from
        the chunk records (RAFS v6 chunk indexes) and the two disagree; None otherwise."""
        return None

    @property
    def size(self) -> int:
        """Bytes of the bootstrap."""
        return len(self.buf)

    def raw(self) -> bytes:
        """The bootstrap's bytes."""
        return bytes(self.buf)

    def backed_bound(self, ino: int) -> int:
        """The most bytes of the regular file `ino` its records can back with data (chunks or
        inline blocks); a larger size is a hole nothing stores. Readers of whole files (check)
        use it to avoid reading such sizes out as zeros."""
        return self.inode(ino).size

    @abc.abstractmethod
    def max_names(self) -> int:
        """The most names (root included) the bootstrap has room for; a walk yielding more
        has met directories that share entries."""

    # --- common API -----------------------------------------------------------------------
    def getattr(self, ino: int) -> Inode:
        return self.inode(ino)

    def link_key(self, ino: int) -> object:
        """Hard-link identity: equal for every name of one inode."""
        return ino

    def getxattr(self, ino: int, name: bytes) -> bytes | None:
        for n, v in self.xattrs(ino):
            if n == name:
                return v
        return None

    @names_file
    def resolve(self, path: bytes | str) -> int:
        """Inode of an absolute path (symlinks are not followed)."""
        raw = os.fsencode(path)
        ino = self.root_ino
        for part in raw.split(b"/"):
            if part in (b"", b"."):
                continue
            if not self.inode(ino).is_dir:
                raise NotADirError(f"{self.name}: {os.fsdecode(raw)}: not a directory")
            try:
                ino = self.lookup(ino, part)
            except NotFoundError:
                raise NotFoundError(f"{self.name}: {os.fsdecode(raw)}: no such file or directory") from None
        return ino

    def walk(self, top: int | None = None, prefix: bytes = b"") -> Iterator[tuple[bytes, int]]:
        """(path, ino) of every entry in DFS pre-order with name-sorted children; the root is b'/'.

        A directory has exactly one parent, so a directory reached a second time (a loop, or
        a corrupt image sharing a subtree, which could multiply the walk exponentially) raises
        FormatError: the walk visits each directory once and always ends. So do paths longer
        than MAX_PATH (which bounds the depth, and the bytes spent per path) and more names
        than the bootstrap has room for (directories sharing entries).
        """
        try:  # a generator: errors surface while iterating, so `names_file` cannot wrap it
            yield from self._walk(top, prefix)
        except FormatError as e:
            raise e.in_file(self.name) from None

    def _walk(self, top: int | None, prefix: bytes) -> Iterator[tuple[bytes, int]]:
        # directories are listed uncached: a walk reads each once, and keeping them in the
        # readdir cache would hold every name of the image
        start = self.root_ino if top is None else top
        yield (prefix or b"/"), start
        stack: list[tuple[bytes, Iterator[tuple[bytes, int]]]] = []
        if self.inode(start).is_dir:
            stack.append((prefix, iter(self.list_dir(start))))
        seen: set[int] = {start}
        names, most = 1, self.max_names()
        while stack:
            base, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                continue
            name, ino = child
            if len(base) + 1 + len(name) > MAX_PATH:
                raise FormatError("directory tree", field="path", offset=self.inode(ino).offset,
                                  expected=f"paths of at most {MAX_PATH} bytes (PATH_MAX)",
                                  found=f"{len(base) + 1 + len(name)} bytes at depth {len(stack)}: "
                                  f"{os.fsdecode(base[:60])!r}...")
            names += 1
            if names > most:
                raise FormatError("directory tree", field="dirent", offset=self.inode(ino).offset,
                                  expected=f"at most {most} names, what the bootstrap has room for",
                                  found=f"more, at {os.fsdecode(base[:200] + b'/' + name)!r}",
                                  hint="directories share entries")
            path = base + b"/" + name
            yield path, ino
            if self.inode(ino).is_dir:
                if ino in seen:
                    raise FormatError("directory tree", field="dirent", offset=self.inode(ino).offset,
                                      expected="each directory under one parent",
                                      found=f"inode {ino} again at {os.fsdecode(path)!r}")
                seen.add(ino)
                stack.append((path, iter(self.list_dir(ino))))

    @names_file
    def read(self, ino: int, offset: int, size: int, verify: bool = True) -> bytes:
        """File bytes [offset, offset+size) clipped to the file size; chunks come from the blob
        store (decompressed, digest-checked when `verify`)."""
        node = self.inode(ino)
        if not node.is_reg:
            raise InvalidInodeError(f"{self.name}: inode {ino} is not a regular file")
        end = min(node.size, offset + size)
        if offset >= end:
            return b""
        flat = self.flat_data(ino)
        if flat is not None:
            return flat[offset:end]
        chunks = self.chunks(ino)
        problem = self.chunk_map_problem(ino)
        if problem is not None:
            # a chunk map the format does not allow would serve wrong bytes: refuse the file
            raise FormatError(f"RAFS chunk map of inode {ino}", offset=node.offset,
                              expected="chunks that tile the file as the format requires",
                              found=problem)
        out = []
        pos = offset
        i = max(0, bisect.bisect_right(chunks, pos, key=_file_offset) - 1)
        while pos < end:
            while i < len(chunks) and chunks[i].file_offset + chunks[i].uncompressed_size <= pos:
                i += 1
            if i < len(chunks) and chunks[i].file_offset <= pos:
                c = chunks[i]
                data = self.chunk_data(c, verify)
                stop = min(end, c.file_offset + c.uncompressed_size)
                out.append(data[pos - c.file_offset:stop - c.file_offset])
                i += 1
            else:
                # a hole no chunk covers (HAS_HOLE images): zeros up to the next chunk
                stop = min(end, chunks[i].file_offset) if i < len(chunks) else end
                out.append(bytes(stop - pos))
            pos = stop
        return b"".join(out)

    def _chunk_map_problem(self, ino: int) -> str | None:
        found = file_problem(self, ino)
        return None if found is None else found[1]

    def chunk_data(self, chunk: ChunkInfo, verify: bool = True) -> bytes:
        if self.blob_store is None:
            raise NotFoundError(f"{self.name}: no blob store attached")
        return self.blob_store.chunk_data(chunk, verify)

    @names_file
    def blob_of(self, chunk: ChunkInfo) -> BlobInfo:
        if not 0 <= chunk.blob_index < len(self.blobs):
            raise FormatError("chunk info", field="blob_index", expected=f"< {len(self.blobs)}",
                              found=chunk.blob_index)
        return self.blobs[chunk.blob_index]

    def statfs_counts(self) -> tuple[int, int]:
        """(blocks of 4 KiB, inodes) for statfs."""
        total = sum(b.uncompressed_size for b in self.blobs)
        return (total + 4095) // 4096, self.inode_count

    def close(self) -> None:
        for cache in (self.inode, self.readdir, self.chunks, self.chunk_map_problem):
            cache.cache_clear()
        if self.blob_store is not None:
            self.blob_store.close()
        buf, self.buf = self.buf, b""
        if isinstance(buf, memoryview):
            buf.release()
        if self._keepalive is not None:
            try:
                self._keepalive.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes with the last reference
            self._keepalive = None

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def kind(self, ino: int) -> str:
        return file_kind(self.inode(ino).mode)


def _file_offset(chunk: ChunkInfo) -> int:
    return chunk.file_offset


def file_kind(mode: int) -> str:
    return {
        stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
    }.get(stat.S_IFMT(mode), "unknown")
