"""What explore and diff accept on the command line, turned into layers and sides.

A file is a Nydus bootstrap or layer file when it looks like one (RAFS/EROFS magic, a layout A
or B layer, a bootstrap tarball whose first member is under `image/`); anything else is an
OCI layer: a tar (plain, gzip, zstd) or an untarred directory.
"""

from __future__ import annotations

import os
import tarfile

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


def load_layers(paths: list[str], blob_dirs: tuple[str, ...] = ()) -> list[LayerInput]:
    """Layer files, lowest first: Nydus layer files and OCI layers, in any mix."""
    return [from_nydus_layer(p, blob_dirs=blob_dirs) if is_nydus(p) else from_oci_tar(p) for p in paths]


def load_side(path: str, blob_dirs: list[str], content: str) -> Side:
    """One side of a diff: a Nydus bootstrap or layer file, or an OCI layer (a one-layer image)."""
    if is_nydus(path):
        with open_image(path, blob_dirs) as image:
            return nydus_side(path, image, content)
    return oci_side(path, [path])
