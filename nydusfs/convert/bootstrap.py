"""The bootstrap layer (spec image.md §2.2): a gzip tar of `image/`, `image/image.boot` and,
for RAFS v6, `image/<blob digest hex>.blob.meta` per blob that has a chunk table. Written
deterministically (fixed times, owners and gzip header), so the same bootstrap gives the same
layer digest."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile

from ..format.blob import BLOB_META_HEADER_SIZE
from ..format.layer import detect, load_section
from ..format.record import align
from ..image.source import ImageError


@dataclasses.dataclass
class BootstrapLayer:
    data: bytes          # the gzip stream (the layer)
    digest: str          # sha256 of `data`
    diff_id: str         # sha256 of the uncompressed tar


def blob_meta(path: str) -> bytes | None:
    """`<digest>.blob.meta` content of a layer file: the uncompressed chunk table zero-padded
    to 4096 bytes, then the 4096-byte blob meta header; None when the blob has none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        layout = detect(fd, path)
        sections = dict(layout.sections)
        table, header = sections.get(b"blob.meta"), sections.get(b"blob.meta.header")
        if table is None or header is None:
            return None
        raw = load_section(fd, path, table, "blob.meta")
        if raw is None:
            raw = os.pread(fd, table.size, table.offset)
        head = load_section(fd, path, header, "blob.meta.header")
        if head is None:
            head = os.pread(fd, header.size, header.offset)
    finally:
        os.close(fd)
    if len(head) != BLOB_META_HEADER_SIZE:
        raise ImageError(f"{path}: blob.meta.header is {len(head)} bytes, expected {BLOB_META_HEADER_SIZE}")
    return raw + bytes(align(len(raw), 4096) - len(raw)) + head


def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.mode = 0o755 if directory else 0o444
    ti.size = 0 if directory else size
    ti.mtime = 0
    return ti


def build(bootstrap: bytes, metas: list[tuple[str, bytes]]) -> BootstrapLayer:
    """`metas`: (blob digest hex, blob.meta bytes), in layer order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        tf.addfile(_info("image", 0, directory=True))
        tf.addfile(_info("image/image.boot", len(bootstrap)), io.BytesIO(bootstrap))
        for hexdigest, meta in metas:
            tf.addfile(_info(f"image/{hexdigest}.blob.meta", len(meta)), io.BytesIO(meta))
    tar = raw.getvalue()
    data = gzip.compress(tar, compresslevel=6, mtime=0)
    return BootstrapLayer(data, "sha256:" + hashlib.sha256(data).hexdigest(),
                          "sha256:" + hashlib.sha256(tar).hexdigest())
