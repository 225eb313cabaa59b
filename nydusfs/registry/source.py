"""The registry as an image backend: `RegistrySource` (read) and `RegistryTarget` (convert's
destination), implementing nydusfs/image/source.py."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import BinaryIO

import httpx

from nydusfs.image.source import ImageSource, ImageTarget, RangeReader
from nydusfs.registry import credentials
from nydusfs.registry.cache import (
    BlobCache,
    CachedRangeReader,
    NotCached,
    Progress,
    in_cache_only,
)
from nydusfs.registry.client import (
    MANIFEST_LIMIT,
    MANIFEST_TYPES,
    RegistryClient,
    Retry,
)
from nydusfs.registry.errors import RegistryError, UploadSessionLost
from nydusfs.registry.reference import Reference, parse_reference
from nydusfs.registry.traffic import Traffic

UPLOAD_CHUNK = 8 << 20


def _client(reference: str, actions: str, extra_scopes: list[str] | None, *,
            creds: str | credentials.Credentials | None = None,
            authfile: str | os.PathLike | None = None, tls_verify: bool = True,
            cert_dir: str | os.PathLike | None = None, plain_http: bool = False,
            timeout: float = 30.0, retry_time: float = 30.0,
            connect_retry_time: float = 2.0) -> RegistryClient:
    ref = parse_reference(reference)
    found = credentials.lookup(ref.host, ref.repo, creds=creds, authfile=authfile)
    client = RegistryClient(ref, creds=found, actions=actions, extra_scopes=extra_scopes,
                            tls_verify=tls_verify, cert_dir=cert_dir, plain_http=plain_http,
                            timeout=timeout, retry_time=retry_time,
                            connect_retry_time=connect_retry_time)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


class RemoteRangeReader:
    """Random access to a blob straight from the registry (no cache): one Range request per
    pread."""

    def __init__(self, client: RegistryClient, digest: str, size: int) -> None:
        self.client, self.digest, self.size = client, digest, size

    def fetch(self, size: int, offset: int,
              progress: Progress | None = None) -> bytes | bytearray:
        """Like pread, without copying the received buffer, and reporting progress (for
        the cache)."""
        size = max(0, min(size, self.size - offset))
        if in_cache_only():
            raise NotCached(f"blob {self.digest}: read without a cache")
        return self.client.read_range(self.digest, offset, size, progress)

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self.fetch(size, offset))

    def close(self) -> None:
        pass


class BlobStream(io.RawIOBase):
    """A blob read once from the start. A connection lost midway is resumed with a Range
    request from the byte reached (within the retry budget); the sha256 of the bytes is
    checked at the end, so a stream that ends cleanly ends with the right bytes."""

    def __init__(self, client: RegistryClient, digest: str) -> None:
        self.client, self.digest = client, digest
        self.pos = 0
        self.hash = hashlib.sha256()
        self.parts: Iterator[bytes] | None = None
        self.buf = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes:
        def attempt() -> bytes:
            if self.parts is None:
                self.parts = self.client.stream_blob(self.digest, self.pos)
            try:
                return next(self.parts, b"")
            except httpx.TransportError as e:
                self.parts = None
                raise Retry(f"connection lost at byte {self.pos}: {e}") from None
        return self.client.retrying(f"blob {self.digest}", attempt, digest=self.digest)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.buf and not self.eof:
            self.buf = self._next()
            if not self.buf:
                self.eof = True
                found = "sha256:" + self.hash.hexdigest()
                if found != self.digest:
                    raise RegistryError(f"{self.client.where}: blob {self.digest}: the "
                                        f"{self.pos} bytes received have digest {found}")
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.hash.update(self.buf[:n])
        self.buf = self.buf[n:]
        self.pos += n
        return n

    def close(self) -> None:
        if self.parts is not None:
            close = getattr(self.parts, "close", None)
            if close:
                close()
            self.parts = None
        super().close()


class RegistrySource(ImageSource):
    """An image in a registry. Blobs for random access go through the on-disk cache when a
    `cache_dir` is given; prefetching threads (nydusfs.registry.traffic.background) yield to
    on-demand reads and keep to `bandwidth_limit` (bytes/s)."""

    remote = True       # blob reads go over the network: never from the FUSE loop's thread

    def __init__(self, reference: str, *, cache_dir: str | os.PathLike | None = None,
                 cache_limit: int | None = None, bandwidth_limit: int | None = None,
                 **options: object) -> None:
        self.reference = reference
        self.ref: Reference = parse_reference(reference)
        self.client = _client(reference, "pull", None, **options)  # type: ignore[arg-type]
        self.cache = BlobCache(cache_dir, limit=cache_limit) if cache_dir is not None else None
        self.traffic = Traffic(bandwidth_limit)
        self._manifest: tuple[bytes, str] | None = None
        self.readers: dict[str, CachedRangeReader] = {}
        self.readers_lock = threading.Lock()

    def index_or_manifest(self) -> tuple[bytes, str]:
        if self._manifest is None:
            self._manifest = self.client.get_manifest(self.ref.ref)
        return self._manifest

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A manifest named by an index, from the manifests endpoint."""
        return self.client.get_manifest(digest)

    def read_blob(self, digest: str, limit: int) -> bytes:
        def attempt() -> bytes:
            resp = self.client.get_blob(digest)
            with closing(resp):
                if resp.status_code != 200:
                    raise self.client._fail(f"blob {digest}", resp)
                return self.client._read_limited(resp, limit, f"blob {digest}")
        data = self.client.retrying(f"blob {digest}", attempt, digest=digest)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"{self.reference}: blob {digest}: bytes do not match the digest")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        return io.BufferedReader(BlobStream(self.client, digest), 1 << 20)

    def blob_size(self, digest: str) -> int:
        size = self.client.head_blob(digest)
        if size is None or size < 0:
            raise RegistryError(f"{self.reference}: blob {digest}: not found in {self.ref.repo}")
        return size

    def range_reader(self, digest: str, size: int | None = None) -> RangeReader:
        if size is None:
            size = self.blob_size(digest)
        remote = RemoteRangeReader(self.client, digest, size)
        if self.cache is None:
            return remote
        with self.readers_lock:
            reader = self.readers.get(digest)
            if reader is not None and not reader.closed:
                return reader       # one per blob: its threads share in-flight pages
            if in_cache_only():     # opening the cache files may wait (flock, fsync)
                raise NotCached(f"blob {digest}: not opened yet")

            def fetch(n: int, offset: int, progress: Progress | None = None) -> bytes | bytearray:
                with self.traffic.request(n):
                    return remote.fetch(n, offset, progress)
            reader = CachedRangeReader(self.cache, digest, size, fetch, fetch_into=fetch)
            self.readers[digest] = reader
            return reader

    def stats(self) -> dict[str, object]:
        """Requests, bytes, retries and errors per blob, and cache hits and misses (reads
        served from the cache / needing a fetch), for `nydusfs stats`."""
        s = self.client.stats
        with s.lock:
            blobs = {d: dataclasses.asdict(b) for d, b in s.blobs.items()}
            out: dict[str, object] = {"requests": s.requests, "retries": s.retries}
        for digest, reader in list(self.readers.items()):
            entry = blobs.setdefault(digest, {})
            entry.update(cache_hits=reader.hits, cache_misses=reader.misses,
                         cache_fetched_bytes=reader.fetched)
        out["blobs"] = blobs
        return out

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.client.close()


class RegistryTarget(ImageTarget):
    """Where convert pushes: blobs first (skipped when present, mounted from `mount_from` on
    the same registry when possible, else uploaded in chunks), manifests at commit."""

    def __init__(self, reference: str, *, mount_from: str | None = None,
                 **options: object) -> None:
        self.reference = reference
        self.ref = parse_reference(reference)
        self.mount_from: str | None = None
        extra = []
        if mount_from:
            src = parse_reference(mount_from) if mount_from.startswith("docker://") else None
            if src is not None and src.endpoint == self.ref.endpoint and src.repo != self.ref.repo:
                self.mount_from = src.repo
                extra.append(f"repository:{src.repo}:pull")
        self.client = _client(reference, "pull,push", extra, **options)  # type: ignore[arg-type]
        self.children: list[tuple[str, bytes, str]] = []
        self.top: tuple[bytes, str] | None = None
        self.absent: set[str] = set()     # blobs has_blob just found missing: put_blob's next

    def has_blob(self, digest: str) -> bool:
        present = self.client.head_blob(digest) is not None
        if not present:
            self.absent.add(digest)
        return present

    def put_blob(self, digest: str, size: int, stream: BinaryIO) -> None:
        if size <= MANIFEST_LIMIT:
            data = stream.read(size + 1)
            media = _manifest_media_type(data)
            if media is not None:   # a manifest named by an index goes to the manifests endpoint
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    raise RegistryError(f"{self.reference}: manifest {digest}: bytes do not match")
                self.children.append((digest, data, media))
                return
            stream = io.BytesIO(data)
        if digest in self.absent:       # the caller has just asked: no second HEAD
            self.absent.discard(digest)
        elif self.client.head_blob(digest) is not None:
            return
        if self.mount_from and self.client.mount_blob(digest, self.mount_from):
            return

        def chunks() -> Iterator[bytes]:
            while True:
                chunk = stream.read(UPLOAD_CHUNK)
                if not chunk:
                    return
                yield chunk
        start = stream.tell() if stream.seekable() else None
        for attempt in range(3):
            try:
                self.client.upload_blob(digest, size, chunks(), UPLOAD_CHUNK)
                return
            except UploadSessionLost:
                if start is None or attempt == 2:
                    raise
                stream.seek(start)      # a new session, from the first byte

    def put_child_manifest(self, data: bytes, media_type: str) -> None:
        """A manifest an index points at: PUT by digest at commit, before the index (a
        registry refuses an index naming manifests it does not hold)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if all(d != digest for d, _, _ in self.children):
            self.children.append((digest, data, media_type))

    def put_manifest(self, data: bytes, media_type: str) -> None:
        self.top = (data, media_type)

    def commit(self) -> None:
        if self.top is None:
            raise RegistryError(f"{self.reference}: nothing to publish (no manifest was written)")
        for digest, data, media in self.children:
            self.client.put_manifest(digest, data, media)
        self.client.put_manifest(self.ref.digest or self.ref.tag or "latest", *self.top)
        self.top = None

    def __enter__(self) -> RegistryTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # uploaded blobs that no manifest names are invisible and left to the registry's
        # garbage collection; nothing was published without commit
        self.client.close()


def _manifest_media_type(data: bytes) -> str | None:
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        media = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return media if media in MANIFEST_TYPES else None
