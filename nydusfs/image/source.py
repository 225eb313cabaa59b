"""Where an image's bytes come from: the one interface every image backend implements.

An image reference (``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``, ``docker-archive:FILE[:REF]``,
``docker://HOST/REPO[:TAG|@DIGEST]``) resolves to an :class:`ImageSource`. Everything above it
(convert, check, mount, dump, unpack, explore) asks a source for content-addressed blobs and
never for file paths, so a local layout, a member of an archive and a registry range behind a
cache are all "read this range of blob X".

Backends: local ones in ``nydusfs/image/`` (OCI layout, oci-archive, docker-archive), the
registry one in ``nydusfs/registry/``. A writable target (convert's DST) is an
:class:`ImageTarget`.
"""

from __future__ import annotations

import abc
from typing import BinaryIO, Protocol

from ..errors import NydusfsError


class ImageError(NydusfsError):
    """A bad reference, a broken layout or archive, a manifest or config that does not follow
    the OCI/Docker specs: one line naming the reference, the file or blob, and the field."""


class RangeReader(Protocol):
    """Random access to one blob. Thread-safe: ``pread`` keeps no shared position, so the
    reader's worker threads may call it at once (``os.pread`` on a file, a Range request on
    a registry)."""

    size: int

    def pread(self, size: int, offset: int) -> bytes:
        """Exactly ``size`` bytes at ``offset`` (fewer only at the end of the blob)."""
        ...

    def close(self) -> None: ...


class ImageSource(abc.ABC):
    """One resolved image reference, read-only."""

    #: the reference as the user wrote it, for messages
    reference: str

    @abc.abstractmethod
    def index_or_manifest(self) -> tuple[bytes, str]:
        """The raw bytes and media type the reference points at: an image manifest or an
        index (OCI or Docker media types). Raw bytes, because digests are of bytes."""

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A manifest an index points at, by digest: (raw bytes, media type or ""). In a
        layout it is a blob; a registry serves it from its manifests endpoint."""
        return self.read_blob(digest, 4 << 20), ""

    @abc.abstractmethod
    def read_blob(self, digest: str, limit: int) -> bytes:
        """A small blob (manifest, config) whole; more than ``limit`` bytes is an error
        naming the reference and the digest. The bytes are checked against ``digest``."""

    @abc.abstractmethod
    def open_blob(self, digest: str) -> BinaryIO:
        """A large blob (a layer) as a stream read once from the start."""

    @abc.abstractmethod
    def range_reader(self, digest: str) -> RangeReader:
        """Random access to a blob (Nydus data blobs read lazily by the reader)."""

    def stored_size(self, digest: str) -> int | None:
        """The size of a blob the source holds, when it is known without a request (local
        files); None when it is not known or the blob is missing."""
        return None

    def close(self) -> None:
        """Release files, archives and connections."""

    def __enter__(self) -> ImageSource:  # noqa: PYI034 - kept simple for the backends
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageTarget(abc.ABC):
    """Where convert writes an image. Writes become visible only at :meth:`commit`; a target
    that is closed without commit is left as it was before."""

    reference: str

    @abc.abstractmethod
    def has_blob(self, digest: str) -> bool:
        """Whether the target holds this blob already (so it need not be written again)."""

    @abc.abstractmethod
    def put_blob(self, digest: str, size: int, stream: BinaryIO) -> None:
        """Store a blob of known digest and size, read from ``stream``; the bytes are checked."""

    @abc.abstractmethod
    def put_manifest(self, data: bytes, media_type: str) -> None:
        """The manifest or index to publish under the reference's tag, last of all."""

    def put_child_manifest(self, data: bytes, media_type: str) -> None:
        """A manifest an index written later points at, stored by digest only (no tag). In a
        layout it is a blob; a registry overrides this to PUT it as a manifest by digest."""
        import hashlib
        import io

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            self.put_blob(digest, len(data), io.BytesIO(data))

    @abc.abstractmethod
    def commit(self) -> None:
        """Make everything written visible at once."""

    def close(self) -> None:
        """Without a commit: undo everything written."""
