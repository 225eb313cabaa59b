"""`open_image()`: one lazy, thread-safe reader for RAFS v5 and v6 bootstraps plus their blobs.

Imports neither pyfuse3, trio nor rich.
"""

from __future__ import annotations

import os
from typing import Iterable

from ..errors import FormatError
from ..format.flags import BlobFeatures
from ..format.v6 import EROFS_MAGIC, SUPERBLOCK_OFFSET
from ..format.layer import is_v5_bootstrap, open_bootstrap
from .base import Image, file_kind
from .blobs import BlobStore
from .model import BlobInfo, Inode
from .v5 import ImageV5
from .v6 import ImageV6
__all__ = ["open_image", "Image", "Inode", "BlobInfo", "BlobStore", "file_kind", "name_stem"]


def name_stem(path: str | os.PathLike[str]) -> str:
    """The file name up to its first dot (upstream's blob id from a meta/layer file path)."""
    base = os.path.basename(os.fspath(path))
    return base.split(".", 1)[0] if not base.startswith(".") else base


def open_image(bootstrap: str | os.PathLike[str], blob_dirs: Iterable[str | os.PathLike[str]] = (),
               cache_bytes: int | None = None) -> Image:
    """Open a bootstrap (bare, or inside a Nydus layer file) and attach a blob store.

    Blobs are looked up by id in `blob_dirs`. When `bootstrap` is a Nydus layer file, the
    layer's own blob is that same file (its chunk offsets are absolute in it).
    """
    name = os.fspath(bootstrap)
    buf, layout, keepalive = open_bootstrap(name)
    stem = name_stem(name) if layout.kind != "bootstrap" else ""
    head = bytes(buf[:8])
    try:
        if is_v5_bootstrap(head):
            image: Image = ImageV5(name, buf, layout, keepalive, stem)
        elif bytes(buf[SUPERBLOCK_OFFSET:SUPERBLOCK_OFFSET + 4]) == EROFS_MAGIC.to_bytes(4, "little"):
            image = ImageV6(name, buf, layout, keepalive, stem)
        else:
            raise FormatError("RAFS bootstrap", field="magic", offset=0, expected="RAFS v5 or v6 magic",
                              found=head, file=name)
    except BaseException:
        if keepalive is not None:
            try:
                keepalive.close()
            except BufferError:
                pass
        raise
    files = {}
    if layout.kind in ("A", "B") and layout.blob is not None:
        files = {i: name for i in _own_blob_indexes(image, layout.blob.size)}
    image.blob_store = BlobStore(image.blobs, blob_dirs, files) if cache_bytes is None else \
        BlobStore(image.blobs, blob_dirs, files, cache_bytes)
    return image


def _own_blob_indexes(image: Image, blob_size: int) -> list[int]:
    """Blobs of a layer file that live in the file itself: the inlined-meta blob, else the one
    blob whose recorded size is the layer's image.blob size (else the last: a per-layer
    bootstrap lists dict blobs before its own)."""
    inlined = [b.index for b in image.blobs if b.features & BlobFeatures.INLINED_FS_META]
    if inlined:
        return inlined
    sized = [b.index for b in image.blobs if b.compressed_size == blob_size]
    if len(sized) == 1:
        return sized
    return [len(image.blobs) - 1] if image.blobs else []
