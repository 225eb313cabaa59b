"""What explore and diff accept on the command line, turned into layers and sides.

A file is a Nydus bootstrap or layer file when it looks like one (RAFS/EROFS magic, a layout A
or B layer, a bootstrap tarball whose first member is under `image/`); anything else is an
OCI layer: a tar (plain, gzip, zstd) or an untarred directory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from typing import Any

from ..errors import FormatError, UsageError
from ..format.layer import detect
from ..reader import open_image
from ..util.streams import open_decompressed
from .diff import Side, nydus_side, oci_side
from .layers import LayerInput, from_nydus_layer, from_oci_tar


def is_nydus(path: str) -> bool:
    if os.path.isdir(path):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
    try:
        try:
            layout = detect(fd, path)
        except FormatError:
            return False
        if layout.kind in ("bootstrap", "B"):
            return True
        if layout.kind == "A":
            return layout.bootstrap is not None
        with open(os.dup(fd), "rb") as raw:   # a bootstrap tarball: image/ comes first
            try:
                head = open_decompressed(raw).read(tarfile.BLOCKSIZE)
            except Exception:  # noqa: BLE001 - a broken stream is for the layer reader to report
                return False
        return head[:6] == b"image/" or head[:8] == b"./image/"
    finally:
        os.close(fd)


def load_layers(paths: list[str], blob_dirs: tuple[str, ...] = (), chunks: bool = True) -> list[LayerInput]:
    """Layer files, lowest first: Nydus layer files and OCI layers, in any mix. Without
    `chunks`, Nydus layers are read without their chunk lists (`figures` reads them later)."""
    return [from_nydus_layer(p, blob_dirs=blob_dirs, chunks=chunks) if is_nydus(p) else from_oci_tar(p)
            for p in paths]


def is_reference(arg: str) -> bool:
    from ..image import looks_like_reference

    return looks_like_reference(arg) and not os.path.exists(arg)


def is_nydus_arg(arg: str, **options: Any) -> bool:
    """Whether a command-line argument names a Nydus image (reference) or Nydus layer (file).
    `options` go to the image source (registry options)."""
    if not is_reference(arg):
        return is_nydus(arg)
    from ..image import open_source, resolve
    from ..image.nydus import bootstrap_layer

    with open_source(arg, **options) as source:
        return bootstrap_layer(resolve(source)[0].manifest) is not None


def load_side(arg: str, blob_dirs: list[str], content: str, **options: Any) -> Side:
    """One side of a diff: an image reference (OCI or Nydus), a Nydus bootstrap or layer file,
    or an OCI layer (a one-layer image)."""
    if is_reference(arg):
        from ..image.nydus import open_any

        if is_nydus_arg(arg, **options):
            with open_any(arg, **options) as image:
                return nydus_side(arg, image, content)
        from ..image import open_source, resolve

        with open_source(arg, **options) as source, tempfile.TemporaryDirectory(prefix="nydusfs-diff-") as spool:
            manifest = resolve(source)[0].manifest
            return oci_side(arg, [_blob_file(source, d.digest, spool) for d in manifest.layers])
    if is_nydus(arg):
        with open_image(arg, blob_dirs) as image:
            return nydus_side(arg, image, content)
    return oci_side(arg, [arg])


def load_image(text: str, platform: Any = None, chunks: bool = True, **options: Any) -> list[LayerInput]:
    """The layers of an image reference (OCI, or Nydus: its blob layers, each holding its own
    layer bootstrap), with `created_by` from the config history and sizes from the manifest.
    Blobs are read where they lie in a layout; others are spooled to a temporary directory.
    Without `chunks`, Nydus blobs read in place are read without their chunk lists."""
    from ..image import open_source, resolve
    from ..image.nydus import bootstrap_layer

    with open_source(text, **options) as source, tempfile.TemporaryDirectory(prefix="nydusfs-explore-") as spool:
        resolved = resolve(source, platform)[0]
        history = [h.get("created_by") for h in resolved.config.get("history") or []
                   if isinstance(h, dict) and not h.get("empty_layer")]
        boot = bootstrap_layer(resolved.manifest)
        layers = [d for d in resolved.manifest.layers if d is not boot]
        out = []
        for i, d in enumerate(layers):
            path = _blob_file(source, d.digest, spool)
            created = history[i] if i < len(history) and isinstance(history[i], str) else None
            if boot is not None:
                later = not chunks and not path.startswith(spool)    # the spool goes away
                layer = from_nydus_layer(path, name=d.digest, created_by=created, chunks=not later)
                layer.nydus_size = d.size
            else:
                layer = from_oci_tar(path, name=d.digest, created_by=created)
                layer.source_size = d.size
            out.append(layer)
        return out


def _blob_file(source: Any, digest: str, spool: str) -> str:
    direct = getattr(source, "blob_path", lambda d: None)(digest)
    if direct is not None:
        return str(direct)
    path = os.path.join(spool, digest.split(":", 1)[-1])
    with source.open_blob(digest) as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return path
