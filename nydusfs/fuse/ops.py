"""The pyfuse3 request handlers: a read-only view of one `Image`.

Metadata requests are answered from the reader directly in the trio thread (a lazily decoded
mmap, no I/O). `read` preads
blobs and decompresses in the trio thread too when that is at most INLINE_BYTES: a hop to a
worker thread (GIL hand-over, two wake-ups) costs more CPU than decompressing a 1 MiB chunk,
and on a busy machine each wake-up also waits for a CPU. Reads with more to decompress (images
with large chunks) run in worker threads behind a capacity limiter. Blobs in a registry: a read
whose bytes this process already holds verified in the on-disk cache is answered the same way;
one that needs a fetch (or would open a blob's cache files) goes to a worker thread, so the
loop never waits on the network.

The image never changes while mounted, so entries, attributes and negative lookups are cached
by the kernel for a long time and file pages survive between opens (keep_cache).
"""

from __future__ import annotations

import bisect
import errno
import functools
import os
import stat
import time
from typing import Any, Awaitable, Callable, Iterator, Sequence, TypeVar, cast

import pyfuse3
import trio

from ..errors import NotFoundError, NydusfsError
from ..format.flags import SuperFlags
from .control import Control
from .guard import FaultLog, guarded
from .inodes import InodeMap

TIMEOUT = 24 * 3600.0          # seconds the kernel may cache entries and attributes
BLOCK = 4096
NAME_MAX = 255
INLINE_BYTES = 2 << 20         # decompression done in the trio thread (two 1 MiB chunks)
ENTRY_CACHE = 1 << 17          # inodes whose attributes are kept (~350 bytes each)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
S64_MAX = (1 << 63) - 1        # off_t, blkcnt_t
MTIME_MAX = S64_MAX             # time_t seconds
FIRST_READS_MAX = 100_000      # files whose first READ is recorded (docs/stats.md)


def _file_offset(chunk: Any) -> int:
    return chunk.file_offset


def _chunks_under(chunks: Sequence[Any], off: int, size: int) -> Iterator[Any]:
    """The chunks (sorted by file offset) holding bytes of [off, off + size)."""
    end = off + size
    for c in chunks[max(0, bisect.bisect_right(chunks, off, key=_file_offset) - 1):]:
        if c.file_offset >= end:
            break
        yield c


def _erofs() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


R = TypeVar("R", bound=Callable[..., Awaitable[bytes]])


def _counted(read: R) -> R:
    """Counts for `nydusfs stats`, apart from how reads are served: a file's first READ (O(1):
    a dict lookup; at most FIRST_READS_MAX files), requests and bytes. Only the trio thread
    writes them. The wrapped method takes the reader inode the handle stands for (found once
    here) in place of the handle."""
    @functools.wraps(read)
    async def counted(self: "Operations", fh: int, off: int, size: int) -> bytes:
        reads = self.first_reads
        ino = self._handle_ino(fh)
        if ino not in reads and len(reads) < FIRST_READS_MAX:
            reads[ino] = time.monotonic() - self.started
        self.read_requests += 1
        data = await read(self, ino, off, size)
        self.read_bytes += len(data)
        return data
    return cast(R, counted)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    inline_reads = True     # False for blobs read over the network (remote_blobs())

    def __init__(self, image: Any, *, verify: bool = True, threads: int = 8,
                 debug: bool = False) -> None:
        super().__init__()
        self.image = image
        self.inodes = InodeMap(image)
        self.verify = verify
        self.debug = debug
        self.threads = threads
        self.skip_open = False     # set once skipopen.install() put its shims in place
        self.faults = FaultLog()
        self.limiter: trio.CapacityLimiter | None = None
        self._cache_only: Any = None            # registry images: see remote_blobs()
        self._not_cached: Any = ()
        # without EXPLICIT_UID_GID the image records no owners: show the daemon's, as nydusd
        self.owner = None if image.flags & SuperFlags.EXPLICIT_UID_GID else (os.geteuid(), os.getegid())
        # attributes per reader inode, built once: every `find` makes the kernel list each
        # directory again, readdirplus wants all attributes each time, '.' and '..' included
        self.attrs = functools.lru_cache(maxsize=ENTRY_CACHE)(self._attrs)
        self._negative = pyfuse3.EntryAttributes()
        self._negative.st_ino = 0
        self._negative.entry_timeout = TIMEOUT
        # for `nydusfs stats` (the control socket, if any): reader inode -> seconds after
        # `started` of its first READ, in that order (an insertion-ordered dict)
        self.control: Control | None = None
        self.started = time.monotonic()
        self.first_reads: dict[int, float] = {}
        self.read_requests = 0
        self.read_bytes = 0

    def remote_blobs(self) -> None:
        """Blobs are read over the network: only reads the on-disk cache answers stay in the
        trio thread."""
        from ..registry.cache import NotCached, cache_only   # httpx with it: registry images only

        self.inline_reads = False
        self._cache_only, self._not_cached = cache_only, NotCached

    # --- attributes --------------------------------------------------------------------------
    def entry(self, parent: int, ino: int) -> pyfuse3.EntryAttributes:
        """Attributes of entry `ino` of directory `parent` (which a directory remembers)."""
        return self.attrs(self.inodes.child(parent, ino))

    def _attrs(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self.image.inode(ino)
        a = pyfuse3.EntryAttributes()
        a.st_ino = self.inodes.to_fuse(ino)
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = node.mode
        a.st_nlink = node.nlink or 1       # 0 would make the kernel treat the inode as deleted
        a.st_uid, a.st_gid = self.owner or (node.uid, node.gid)
        a.st_rdev = node.rdev
        a.st_blksize = BLOCK
        size, mtime, nsec = node.size, node.mtime, node.mtime_nsec
        blocks = getattr(node.record, "i_blocks", None)   # RAFS v5 records it; v6 as erofs does
        if blocks is None:
            blocks = (size + BLOCK - 1) // BLOCK * (BLOCK // 512)
        if not (0 <= size <= S64_MAX and 0 <= blocks <= S64_MAX and 0 <= mtime <= MTIME_MAX):
            # u64 on disk, signed 64-bit in struct stat: a value past that is shown clamped,
            # with one log line, so that this inode still lists (its neighbours in readdir too)
            size = self._fit(ino, "size", size, S64_MAX)
            blocks = self._fit(ino, "blocks", blocks, S64_MAX)
            mtime = self._fit(ino, "mtime", mtime, MTIME_MAX)
        a.st_size = size
        a.st_blocks = blocks
        if nsec >= 1_000_000_000:
            nsec = 999_999_999
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = mtime * 1_000_000_000 + nsec
        return a

    def _fit(self, ino: int, field: str, value: int, limit: int) -> int:
        if 0 <= value <= limit:
            return value
        self.faults.report(("attr", ino, field), f"inode {ino}: {field} {value} cannot be shown "
                           f"through FUSE; shown as {limit if value > limit else 0}")
        return limit if value > limit else 0

    def _reader_ino(self, fuse_ino: int) -> int:
        return self.inodes.to_reader(fuse_ino)

    def _handle_ino(self, fh: int) -> int:
        """Reader inode of a file handle (a FUSE inode number; 0 never is one)."""
        if not fh:
            raise pyfuse3.FUSEError(errno.EIO)
        return self.inodes.to_reader(fh)

    # --- metadata ----------------------------------------------------------------------------
    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._reader_ino(parent_inode)
        if name == b".":
            return self.attrs(parent)
        if name == b"..":
            return self.attrs(self.inodes.parent(parent))
        if len(name) > NAME_MAX:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        try:
            child = self.image.lookup(parent, name)
        except NotFoundError:
            return self._negative          # cached by the kernel: the image cannot change
        return self.entry(parent, child)

    @guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.attrs(self._reader_ino(inode))

    @guarded
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return self.image.readlink(self._reader_ino(inode))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        pass    # nothing is kept per kernel reference

    @guarded
    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        self.image.inode(self._reader_ino(inode))     # exists (else ENOENT/EIO)
        if mode & os.W_OK:
            raise _erofs()
        return True

    @guarded
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        blocks, files = self.image.statfs_counts()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLOCK
        s.f_blocks = blocks
        s.f_bfree = s.f_bavail = 0
        s.f_files = files
        s.f_ffree = s.f_favail = 0
        s.f_namemax = NAME_MAX
        return s

    # --- xattrs ------------------------------------------------------------------------------
    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        value = self.image.getxattr(self._reader_ino(inode), name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @guarded
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [name for name, _ in self.image.xattrs(self._reader_ino(inode))]

    # --- directories -------------------------------------------------------------------------
    # file handles are FUSE inode numbers: what skipopen's shims pass when OPEN is skipped
    @guarded
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if self.skip_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)   # the kernel stops sending OPENDIR
        if not self.image.inode(self._reader_ino(inode)).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        # offsets are positions in the immutable listing: '.', '..', then children by name
        fh = self._handle_ino(fh)
        children = self.image.readdir(fh)
        for pos in range(start_id, len(children) + 2):
            if pos == 0:
                name, attrs = b".", self.attrs(fh)
            elif pos == 1:
                name, attrs = b"..", self.attrs(self.inodes.parent(fh))
            else:
                name, child = children[pos - 2]
                try:
                    attrs = self.entry(fh, child)
                except Exception as e:  # noqa: BLE001 (one bad child must not hide the others)
                    self.faults.report(("readdir", fh, child), f"readdir: inode {fh}: entry "
                                       f"{name!r} (inode {child}) left out: {e}")
                    continue
            if not pyfuse3.readdir_reply(token, name, attrs, pos + 1):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    # --- files -------------------------------------------------------------------------------
    @guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if self.skip_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)   # the kernel stops sending OPEN and RELEASE
        if flags & WRITE_FLAGS:
            raise _erofs()
        ino = self._reader_ino(inode)
        node = self.image.inode(ino)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if not stat.S_ISREG(node.mode):
            raise pyfuse3.FUSEError(errno.ENXIO)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @guarded
    @_counted
    async def read(self, ino: int, off: int, size: int) -> bytes:
        # `ino`: the reader inode of the handle, from _counted
        if self.inline_reads:
            if self._little_work(ino, off, size):
                return self.image.read(ino, off, size, self.verify)
        else:
            try:
                with self._cache_only():  # a fetch (or a cache file to open) raises NotCached
                    if self._cached_little_work(ino, off, size):
                        return self.image.read(ino, off, size, self.verify)
            except self._not_cached:
                pass
        return await trio.to_thread.run_sync(self.image.read, ino, off, size, self.verify,
                                             limiter=self.limiter)

    def _little_work(self, ino: int, off: int, size: int) -> bool:
        """At most INLINE_BYTES to decompress: cheaper here than the round trip to a worker."""
        chunks = self.image.chunks(ino)
        if not chunks:      # inline data (copied whole by the reader) or a file of holes
            return self.image.inode(ino).size <= INLINE_BYTES
        # at most one chunk size asked spans at most two chunks of at most the chunk size
        # (image.read refuses a chunk map that breaks that before decompressing anything)
        chunk = self.image.chunk_size
        if size <= chunk and 2 * chunk <= INLINE_BYTES:
            return True
        work = 0
        for c in _chunks_under(chunks, off, size):
            work += c.uncompressed_size
            if work > INLINE_BYTES:
                return False
        return True

    def _cached_little_work(self, ino: int, off: int, size: int) -> bool:
        """Registry blobs: at most INLINE_BYTES to decompress, and every chunk's bytes in pages
        the blob's cache reader has verified. Anything unusual (a blob index outside the table,
        a blob not in the manifest) is left to the worker path, which reports it."""
        image = self.image
        try:
            chunks = image.chunks(ino)
        except NydusfsError:
            return False
        if not chunks:
            return image.inode(ino).size <= INLINE_BYTES
        blobs, ranges = image.blobs, image.blob_ranges
        work = 0
        for c in _chunks_under(chunks, off, size):
            work += c.uncompressed_size
            if work > INLINE_BYTES or not 0 <= c.blob_index < len(blobs):
                return False
            try:
                reader = ranges(blobs[c.blob_index].blob_id)
            except NydusfsError:
                return False
            cached = getattr(reader, "cached", None)
            if cached is None or not cached(c.compressed_offset, c.compressed_size):
                return False
        return True

    async def release(self, fh: int) -> None:
        pass

    # flush and fsync stay unimplemented (ENOSYS): the kernel then stops sending FLUSH on
    # every close(), one round trip less per file

    # --- writes: the image is read-only ----------------------------------------------------
    async def setattr(self, *args: Any) -> Any:
        raise _erofs()

    async def mknod(self, *args: Any) -> Any:
        raise _erofs()

    async def mkdir(self, *args: Any) -> Any:
        raise _erofs()

    async def unlink(self, *args: Any) -> Any:
        raise _erofs()

    async def rmdir(self, *args: Any) -> Any:
        raise _erofs()

    async def symlink(self, *args: Any) -> Any:
        raise _erofs()

    async def rename(self, *args: Any) -> Any:
        raise _erofs()

    async def link(self, *args: Any) -> Any:
        raise _erofs()

    async def write(self, *args: Any) -> Any:
        raise _erofs()

    async def create(self, *args: Any) -> Any:
        raise _erofs()

    async def setxattr(self, *args: Any) -> Any:
        raise _erofs()

    async def removexattr(self, *args: Any) -> Any:
        raise _erofs()
