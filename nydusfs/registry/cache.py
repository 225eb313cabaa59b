"""On-disk cache of blob ranges fetched from a registry, for lazy reads.

Per blob, in the cache directory (names from the blob's sha256):

* `<hex>.data`  the blob's bytes at their offsets, a sparse file of the blob's size;
* `<hex>.map`   a 128-byte header (magic, version, page size, blob size, digest) and one 8-byte
  entry per page of `page_size` bytes: the page's CRC-32 and a READY marker;
* `<hex>.lock`  held shared (flock) by every process using the blob; exclusively only to evict
  the blob (so a blob in use is never evicted).

Crash safety: a fetched range is written to `.data`, made durable (fdatasync), and only then
are its pages' entries written. A process killed at any point leaves pages either not marked
(fetched again) or marked with the CRC of bytes already on disk. A page whose bytes do not match
its CRC (a truncated or damaged `.data`) is unmarked and fetched again, never served; a `.map`
with a wrong header or size is rebuilt empty.

Processes share the files without further locking: a blob is content-addressed, so two
writers of one page write the same bytes and the same entry.

`--cache-limit`: when the data files exceed the limit, whole blobs are evicted, least recently
opened first; a blob some process holds open is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from nydusfs.registry.errors import RegistryError
from nydusfs.registry.traffic import ThreadFlag

log = logging.getLogger("nydusfs.registry")
PAGE_SIZE = 64 << 10
MAGIC = b"nydusfs-cache\0\0\0"
VERSION = 1
HEADER = struct.Struct("<16sII Q 96s")       # magic, version, page size, blob size, digest
ENTRY = struct.Struct("<II")                 # crc32, READY
READY = 0x31594452                           # "RDY1"
# background read-ahead of a reader going through a blob in order: its first in-order read
# gets the next max_request window; later ones keep READAHEAD_AHEAD bytes fetched ahead, in
# requests of up to READAHEAD_REQUEST (a registry spends about as much per request as on
# 4 MiB of its bytes: docker-registry's CPU per MiB is 5 ms in 1 MiB requests, 1.7 in 4 MiB)
READAHEAD_AHEAD = 8 << 20
READAHEAD_REQUEST = 4 << 20
READAHEAD_THREADS = 2       # background read-ahead requests in flight per blob
READAHEAD_STREAMS = 8       # forward runs through one blob followed at once
PIECE_PAGES = 16            # a request's pages are handed to waiting readers 1 MiB at a time
assert HEADER.size == 128


class NotCached(Exception):
    """Raised inside `cache_only()` where a read would have to fetch (or open a blob's cache
    files): the caller asks again where waiting is allowed. Neither an OSError nor a
    NydusfsError, so no layer in between takes it for a failed read."""


_cache_only = ThreadFlag()


def cache_only() -> contextlib.AbstractContextManager[None]:
    """Reads made by this thread inside the block are answered from pages this process has
    already verified, or raise NotCached: for the FUSE loop, which must never wait on the
    network."""
    return _cache_only.raised()


def in_cache_only() -> bool:
    return _cache_only.is_set()


def default_cache_dir() -> pathlib.Path:
    """`blobs` in the nydusfs cache ($NYDUSFS_CACHE_DIR, else $XDG_CACHE_HOME/nydusfs, else
    ~/.cache/nydusfs), next to the extracted bootstraps."""
    from nydusfs.image.nydus import cache_dir

    return pathlib.Path(cache_dir()) / "blobs"


def _hex(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise RegistryError(f"cache: {digest!r} is not a sha256 digest")
    return hexd


class BlobCache:
    """A cache directory shared by any number of processes."""

    def __init__(self, dir: str | os.PathLike, *, limit: int | None = None,
                 page_size: int = PAGE_SIZE, durable: bool = True) -> None:
        self.dir = pathlib.Path(dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RegistryError(f"--cache-dir {self.dir}: cannot create: {e.strerror}") from None
        self.limit, self.page_size, self.durable = limit, page_size, durable
        self.written_since_evict = 0
        self.lock = threading.Lock()

    def open(self, digest: str, size: int) -> CacheFile:
        return CacheFile(self, digest, size)

    def usage(self) -> int:
        """Bytes the data files take on disk."""
        total = 0
        for p in self.dir.glob("*.data"):
            try:
                total += p.stat().st_blocks * 512
            except FileNotFoundError:
                pass
        return total

    def note_written(self, n: int) -> None:
        if self.limit is None:
            return
        with self.lock:
            self.written_since_evict += n
            due = self.written_since_evict >= min(16 << 20, max(1, self.limit // 8))
            if due:
                self.written_since_evict = 0
        if due:
            self.evict()

    def evict(self) -> list[str]:
        """Remove whole blobs, least recently opened first, until usage is within the limit.
        Returns the digests evicted."""
        if self.limit is None:
            return []
        usage = self.usage()
        if usage <= self.limit:
            return []
        maps = []
        for p in self.dir.glob("*.map"):
            try:
                maps.append((p.stat().st_mtime, p))
            except FileNotFoundError:
                pass
        evicted = []
        for _, m in sorted(maps):
            if usage <= self.limit:
                break
            hexd = m.name[:-4]
            lock = self.dir / f"{hexd}.lock"
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue        # in use by some process
                data = self.dir / f"{hexd}.data"
                try:
                    freed = data.stat().st_blocks * 512
                except FileNotFoundError:
                    freed = 0
                for p in (data, m, lock):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                usage -= freed
                evicted.append("sha256:" + hexd)
            finally:
                os.close(fd)
        return evicted


class CacheFile:
    """One blob's cached pages, open in this process (holding the shared lock)."""

    def __init__(self, cache: BlobCache, digest: str, size: int) -> None:
        self.cache, self.digest, self.size = cache, digest, size
        self.page = cache.page_size
        self.npages = (size + self.page - 1) // self.page
        hexd = _hex(digest)
        d = cache.dir
        self.data_path, self.map_path = d / f"{hexd}.data", d / f"{hexd}.map"
        self.lock_path = d / f"{hexd}.lock"
        self.lock_fd = self.data_fd = self.map_fd = -1
        try:
            self._open()
        except OSError as e:
            self.close()
            raise RegistryError(f"cache {cache.dir}: blob {digest}: {e.strerror or e}") from None
        self.good = bytearray(self.npages)      # pages verified by this process
        self.damaged = 0                        # pages found damaged (logged the first time)

    def _open(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)      # waits only for an eviction in progress
            if self._same_file(fd):
                break
            os.close(fd)        # evicted between open and lock: take the new lock file
        self.lock_fd = fd
        if not self._map_valid():
            self._initialize()
        self.data_fd = os.open(self.data_path, os.O_RDWR | os.O_CLOEXEC)
        self.map_fd = os.open(self.map_path, os.O_RDWR | os.O_CLOEXEC)
        os.utime(self.map_fd)   # recency for LRU eviction

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.page, self.size, self.digest.encode())

    def _map_valid(self) -> bool:
        try:
            with open(self.map_path, "rb") as f:
                head = f.read(HEADER.size)
                size = os.fstat(f.fileno()).st_size
            os.stat(self.data_path)
        except FileNotFoundError:
            return False
        return head == self._header() and size == HEADER.size + self.npages * ENTRY.size

    def _initialize(self) -> None:
        """A fresh, empty map, put in place by rename (other users of the blob may have the
        old one open: their marks are lost, so pages are fetched again, never misread). The
        data file is never truncated below the blob's size: pages a process has verified
        stay valid under it."""
        fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
        finally:
            os.close(fd)
        tmp = self.map_path.with_name(f"{self.map_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(self._header())
            f.write(bytes(self.npages * ENTRY.size))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.map_path)

    def close(self) -> None:
        for name in ("data_fd", "map_fd", "lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # --- pages ----------------------------------------------------------------------------
    def _page_len(self, i: int) -> int:
        return min(self.page, self.size - i * self.page)

    def have(self, i: int) -> bool:
        """Whether page i is in the cache with bytes matching its CRC (checked once per
        process; a mismatch unmarks the page)."""
        if self.good[i]:
            return True
        raw = os.pread(self.map_fd, ENTRY.size, HEADER.size + i * ENTRY.size)
        if len(raw) != ENTRY.size:
            return False
        crc, mark = ENTRY.unpack(raw)
        if mark != READY:
            return False
        n = self._page_len(i)
        data = os.pread(self.data_fd, n, i * self.page)
        if len(data) == n and zlib.crc32(data) == crc:
            self.good[i] = 1
            return True
        # damaged or truncated: forget the page so it is fetched again
        os.pwrite(self.map_fd, bytes(ENTRY.size), HEADER.size + i * ENTRY.size)
        if not self.damaged:
            log.warning("cache %s: blob %s: page %d does not match its checksum (damaged or "
                        "truncated data file): fetched again", self.cache.dir, self.digest, i)
        self.damaged += 1
        return False

    def marked(self, i: int) -> bool:
        """Page i is marked ready (no CRC check: for planning read-ahead only)."""
        if self.good[i]:
            return True
        raw = os.pread(self.map_fd, ENTRY.size, HEADER.size + i * ENTRY.size)
        return len(raw) == ENTRY.size and ENTRY.unpack(raw)[1] == READY

    def verified(self, first: int, last: int) -> bool:
        """Pages first..last are all verified by this process (written by it, or read back
        and matching their CRC)."""
        return self.good.find(0, first, last + 1) < 0

    def write(self, first: int, view: memoryview) -> None:
        """Write pages first.. (whole pages; the blob's last page may be short) to the data
        file; from then on this process reads them (its page cache has them), other processes
        only once `commit` has marked them."""
        off = first * self.page
        done = 0
        while done < len(view):
            done += os.pwrite(self.data_fd, view[done:], off + done)
        count = (len(view) + self.page - 1) // self.page
        self.good[first:first + count] = b"\1" * count

    def commit(self, first: int, data: bytes | bytearray) -> None:
        """Pages first.., already written: made durable, then marked in the map."""
        view = memoryview(data)
        if self.cache.durable:
            os.fdatasync(self.data_fd)
        entries = bytearray()
        count = (len(data) + self.page - 1) // self.page
        for k in range(count):
            entries += ENTRY.pack(zlib.crc32(view[k * self.page:(k + 1) * self.page]), READY)
        os.pwrite(self.map_fd, bytes(entries), HEADER.size + first * ENTRY.size)
        self.cache.note_written(len(data))

    def read(self, size: int, offset: int) -> bytes:
        data = os.pread(self.data_fd, size, offset)
        if len(data) != size:
            raise OSError(errno.EIO, f"cache data file {self.data_path} shorter than expected")
        return data


class _Ahead(threading.Event):
    """Set when a piece of a background read-ahead window is in the cache (or failed)."""


# a claimed piece of a request: first and last page, the pages this fetch claimed, its event
_Piece = tuple[int, int, list[int], threading.Event]
Progress = Callable[[memoryview, int], None]     # (buffer, bytes of it received so far)


class CachedRangeReader:
    """A RangeReader through the cache: pages missing from the cache are fetched with as few
    requests as possible - runs of missing pages merged, gaps of up to `gap` bytes of cached
    pages bridged, each request at most `max_request` bytes, and the last run extended with
    following missing pages up to that size (read-ahead, as nydusd's `amplify_io`). A reader
    going through the blob in order also has the following windows fetched in the background.

    Thread-safe; a page being fetched by one thread is waited for by the others."""

    def __init__(self, cache: BlobCache, digest: str, size: int,
                 fetch: Callable[[int, int], bytes | bytearray], *, max_request: int = 1 << 20,
                 gap: int = 128 << 10, readahead: bool = True, background: bool = True,
                 fetch_into: Callable[[int, int, Progress], bytes | bytearray] | None = None
                 ) -> None:
        self.file = cache.open(digest, size)
        self.size, self.digest, self.fetch = size, digest, fetch
        self.fetch_into = fetch_into        # fetch, reporting progress as the bytes come
        self.page = self.file.page
        self.max_pages = max(1, max_request // self.page)
        self.gap_pages = gap // self.page
        self.readahead = readahead
        self.lock = threading.Lock()
        self.inflight: dict[int, threading.Event] = {}
        self.hits = self.misses = self.fetched = self.requests = 0
        # read-ahead in the background, per forward run through the blob (files read side
        # by side): [front, reads], the end of its furthest read (readers in several threads
        # arrive a little out of order) and the reads that found their pages cached near it
        self.streams: list[list[int]] = []
        self.ahead_pages = max(self.max_pages, READAHEAD_AHEAD // self.page)
        self.ahead_request = max(self.max_pages, READAHEAD_REQUEST // self.page)
        self.prefetching = 0        # background windows being fetched
        self.idle = threading.Condition(self.lock)
        self.pool = (ThreadPoolExecutor(READAHEAD_THREADS, thread_name_prefix="nydusfs-readahead")
                     if readahead and background else None)

    def cached(self, offset: int, size: int) -> bool:
        """Whether bytes offset..offset+size are all in pages this process has verified (they
        stay valid: a blob in use is never evicted, a damaged page is never marked good)."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return True
        return self.file.verified(offset // self.page, (offset + size - 1) // self.page)

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        first, last = offset // self.page, (offset + size - 1) // self.page
        if self.file.verified(first, last):
            missed = demand = False     # most reads
        else:
            if in_cache_only():
                raise NotCached(f"blob {self.digest}: bytes {offset}+{size} not in the cache")
            missed, demand = self._ensure(first, last, self.readahead)
        if missed:
            self.misses += 1
        else:
            self.hits += 1
        stream = self._stream(offset, offset + size)
        if stream is not None and not demand and self.pool is not None:
            # further in order, and the pages were there or on their way as read-ahead
            stream[1] += 1
            if stream[1] == 1:
                self._maybe_prefetch((stream[0] - 1) // self.page, self.max_pages, self.max_pages)
            else:
                self._maybe_prefetch((stream[0] - 1) // self.page, self.ahead_pages,
                                     self.ahead_request)
        return self.file.read(size, offset)

    def _stream(self, offset: int, end: int) -> list[int] | None:
        """The forward run [front, reads] whose front this read moves on, or None when it
        moves none (a read behind a front, or the start of a new run: then the least recently
        continued run is forgotten)."""
        behind, ahead = self.max_pages * self.page, self.gap_pages * self.page
        with self.lock:
            for k, stream in enumerate(self.streams):
                if stream[0] - behind <= offset <= stream[0] + ahead:
                    self.streams.append(self.streams.pop(k))     # most recent last
                    if end <= stream[0]:
                        return None
                    stream[0] = end
                    return stream
            self.streams.append([end, 0])
            if len(self.streams) > READAHEAD_STREAMS:
                del self.streams[0]
            return None

    def fill(self, offset: int, size: int, max_request: int) -> int:
        """Put bytes offset..offset+size in the cache without reading them (prefetch), in
        requests of up to `max_request` bytes; pages already marked are skipped unchecked.
        Returns the bytes fetched."""
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return 0
        first, last = offset // self.page, (offset + size - 1) // self.page
        if all(self.file.marked(i) for i in range(first, last + 1)):
            return 0
        before = self.fetched
        self._ensure(first, last, False, max(1, max_request // self.page))
        return self.fetched - before

    def _ensure(self, first: int, last: int, extend: bool,
                max_pages: int | None = None) -> tuple[bool, bool]:
        """Pages first..last in the cache (fetching what is missing). Returns whether any was
        missing, and whether any came from an on-demand fetch (this thread's or another's)
        rather than only from background read-ahead."""
        missed = demand = False
        while True:
            missing = [i for i in range(first, last + 1) if not self.file.have(i)]
            if not missing:
                return missed, demand
            missed = True
            with self.lock:
                mine = [i for i in missing if i not in self.inflight]
                waits = {self.inflight[i] for i in missing if i in self.inflight}
                runs = self._plan(mine, extend, max_pages) if mine else []
                demand = demand or bool(runs) or any(not isinstance(w, _Ahead) for w in waits)
                claims = [self._claim(a, b, threading.Event) for a, b in runs]
            try:
                for (a, b), pieces in zip(runs, claims, strict=True):
                    self._fetch_run(a, b, pieces)
            finally:
                for pieces in claims:
                    self._give_up(pieces)
            for w in waits:
                w.wait()

    def _claim(self, a: int, b: int, kind: type[threading.Event]) -> list[_Piece]:
        """Claim the pages of a..b no other fetch has (the caller holds the lock), an event
        per PIECE_PAGES of them: a reader waits only for its own piece of a long request."""
        pieces: list[_Piece] = []
        for p in range(a, b + 1, PIECE_PAGES):
            q = min(b, p + PIECE_PAGES - 1)
            event = kind()
            pages = [i for i in range(p, q + 1) if i not in self.inflight]
            for i in pages:
                self.inflight[i] = event
            pieces.append((p, q, pages, event))
        return pieces

    def _give_up(self, pieces: list[_Piece]) -> None:
        """Release claimed pieces (delivered or abandoned): their waiters look again."""
        with self.lock:
            for _p, _q, pages, event in pieces:
                for i in pages:
                    if self.inflight.get(i) is event:
                        del self.inflight[i]
        for piece in pieces:
            piece[3].set()
        pieces.clear()

    def _fetch_run(self, a: int, b: int, pieces: list[_Piece]) -> None:
        """Pages a..b with one request, into the cache. Each claimed piece is written and
        handed to its waiters as soon as its bytes are in (when the fetch reports progress),
        then the whole run is made durable and marked."""
        off = a * self.page
        n = min((b + 1) * self.page, self.size) - off

        def arrived(view: memoryview, got: int) -> None:
            # the pieces wholly within the first `got` bytes (a retried request starts again
            # from 0: pieces already delivered are not written twice)
            if not pieces or min((pieces[0][1] + 1) * self.page, self.size) - off > got:
                return
            ready = [p for p in pieces if min((p[1] + 1) * self.page, self.size) - off <= got]
            start = (ready[0][0] - a) * self.page
            stop = min((ready[-1][1] + 1) * self.page, self.size) - off
            self.file.write(ready[0][0], view[start:stop])
            del pieces[:len(ready)]
            self._give_up(ready)

        if self.fetch_into is not None:
            data = self.fetch_into(n, off, arrived)
        else:
            data = self.fetch(n, off)
        if len(data) != n:
            raise RegistryError(f"blob {self.digest}: fetched {len(data)} of {n} bytes at "
                                f"offset {off}")
        arrived(memoryview(data), n)    # what was not reported as it came
        self.file.commit(a, data)       # the pieces cover a..b: all written by now
        self.requests += 1
        self.fetched += n

    def _maybe_prefetch(self, last: int, ahead: int, request: int) -> None:
        """A sequential reader: fetch the first missing pages within `ahead` pages after page
        `last` (at most `request` pages) in the background while this one is read (at most
        READAHEAD_THREADS such fetches at a time per blob)."""
        end = min(self.file.npages, last + 1 + ahead)
        with self.lock:
            if self.prefetching >= READAHEAD_THREADS:
                return
            nxt = last + 1
            good = self.file.good
            while nxt < end:        # the first page neither verified nor on its way
                nxt = good.find(0, nxt, end)
                if nxt < 0:
                    nxt = end
                elif nxt in self.inflight:
                    nxt += 1
                    continue
                break
            if nxt >= end or self.file.marked(nxt):
                return
            self.prefetching += 1
            stop = nxt
            while (stop + 1 < self.file.npages and stop + 1 - nxt < request
                   and not self.file.good[stop + 1] and stop + 1 not in self.inflight):
                stop += 1
            # claimed now: the next trigger looks further
            pieces = self._claim(nxt, stop, _Ahead)
        assert self.pool is not None
        try:
            self.pool.submit(self._prefetch, nxt, stop, pieces)
        except RuntimeError:        # closing: nothing more is fetched
            self._release(pieces)

    def _release(self, pieces: list[_Piece]) -> None:
        """A read-ahead is over: what it did not deliver, waiting readers look for again."""
        self._give_up(pieces)
        with self.lock:
            self.prefetching -= 1
            self.idle.notify_all()

    def _prefetch(self, first: int, last: int, pieces: list[_Piece]) -> None:
        try:
            self._fetch_run(first, last, pieces)
        except Exception as e:  # noqa: BLE001 - the on-demand read will fetch and report it
            log.debug("blob %s: read-ahead of pages %d-%d failed: %s", self.digest, first, last, e)
        finally:
            self._release(pieces)

    def wait_idle(self) -> None:
        """Wait for the background read-ahead (tests, benchmarks)."""
        with self.lock:
            while self.prefetching:
                self.idle.wait()

    def _plan(self, pages: list[int], extend: bool,
              max_pages: int | None = None) -> list[tuple[int, int]]:
        """Merge missing pages into runs [a, b] (inclusive)."""
        most = max_pages or self.max_pages
        runs: list[list[int]] = []
        for i in pages:
            if runs and i - runs[-1][1] - 1 <= self.gap_pages and i - runs[-1][0] < most:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        if extend and runs:
            a, b = runs[-1]
            while (b + 1 < self.file.npages and b + 1 - a < self.max_pages
                   and b + 1 not in self.inflight and not self.file.marked(b + 1)):
                b += 1
            runs[-1][1] = b
        return [(a, b) for a, b in runs]

    @property
    def closed(self) -> bool:
        return self.file.data_fd < 0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            with self.lock:     # read-ahead cancelled before it ran: release its pages
                cancelled = {e for e in self.inflight.values() if isinstance(e, _Ahead)}
                self.inflight = {i: e for i, e in self.inflight.items() if e not in cancelled}
                self.prefetching = 0
                self.idle.notify_all()
            for e in cancelled:
                e.set()
        self.file.close()
