"""One source layer -> one Nydus blob (a layer file of layout B: data, blob meta, chunk
digests, the layer's bootstrap and the ToC), streamed from the source, never untarred; the file
is named by its sha256, which becomes the blob id and the layer digest (spec image.md §3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable

from ..create.pipeline import CreateOptions, create
from ..image.manifest import Descriptor
from ..image.source import ImageError, ImageSource
from .options import ConvertOptions


@dataclasses.dataclass
class LayerResult:
    source: Descriptor
    digest: str              # sha256:<hex> of the Nydus blob
    size: int
    path: str                # the blob file, named by its hex digest
    entries: int
    input_bytes: int         # bytes of the source layer read (compressed as stored)
    seconds: float
    cached: bool


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class _Counted:
    """The source layer stream, counting bytes for the progress display."""

    def __init__(self, raw: object, tick: Callable[[int], None]) -> None:
        self.raw, self.tick = raw, tick

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)  # type: ignore[attr-defined]
        self.tick(len(data))
        return data  # type: ignore[no-any-return]

    def readinto(self, b: memoryview) -> int:
        n = self.raw.readinto(b)  # type: ignore[attr-defined]
        self.tick(n or 0)
        return n or 0

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        pass


def cached(cache: str, key: str, layer: Descriptor) -> LayerResult | None:
    record = os.path.join(cache, "layers", key + ".json")
    try:
        with open(record, encoding="utf-8") as f:
            doc = json.load(f)
        path = os.path.join(cache, "blobs", doc["digest"][7:])
        if os.path.getsize(path) != doc["size"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return LayerResult(layer, doc["digest"], doc["size"], path, doc["entries"], 0, 0.0, True)


def convert_layer(source: ImageSource, layer: Descriptor, opts: ConvertOptions, cache: str,
                  key: str, chunk_dict: str | None, tick: Callable[[int], None],
                  workers: int) -> LayerResult:
    if opts.use_cache:
        hit = cached(cache, key, layer)
        if hit is not None:
            tick(layer.size)
            return hit
    t0 = time.monotonic()
    blobs = os.path.join(cache, "blobs")
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(os.path.join(cache, "layers"), exist_ok=True)
    tmp = os.path.join(blobs, f".{layer.hex}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    copts = CreateOptions(fs_version=opts.fs_version, compressor=opts.compressor, digester="blake3",
                          chunk_size=opts.chunk_size, whiteout_spec="none", chunk_dict=chunk_dict,
                          prefetch_policy="fs", prefetch_patterns=list(opts.prefetch_patterns),
                          layout="B", output=tmp, workers=workers)
    what = f"{source.reference}: layer {layer.digest}"
    try:
        with source.open_blob(layer.digest) as raw:
            stream = _Counted(raw, tick)
            result = create(what, copts, stream=stream)  # type: ignore[arg-type]
            while raw.read(1 << 20):  # to the end, so the layer digest is checked
                pass
        digest = hash_file(tmp)
        path = os.path.join(blobs, digest[7:])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    size = os.path.getsize(path)
    entries = result.inode_count
    record = os.path.join(cache, "layers", key + ".json")
    with open(record + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"digest": digest, "size": size, "entries": entries, "source": layer.digest}, f)
    os.replace(record + ".tmp", record)
    return LayerResult(layer, digest, size, path, entries, layer.size, time.monotonic() - t0, False)


def check_layer_type(layer: Descriptor, reference: str, index: int) -> None:
    from ..image import media

    if layer.media_type not in media.TAR_LAYERS:
        raise ImageError(f"{reference}: layer {index} ({layer.digest}): media type {layer.media_type!r} "
                         "is not an OCI/Docker tar layer (already a Nydus image?)")
