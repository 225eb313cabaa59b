"""What explore and diff accept on the command line, turned into layers and sides.

A file is a Nydus bootstrap or layer file when it looks like one (RAFS/EROFS magic, a layout A
or B layer, a bootstrap tarball whose first member is under `image/`); anything else is an
OCI layer: a tar (plain, gzip, zstd) or an untarred directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import tarfile
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import FormatError, UsageError
from ..format.layer import detect
from ..reader import Image, open_image
from ..util.streams import open_decompressed
from .layers import LayerInput, from_nydus_layer, from_oci_tar

if TYPE_CHECKING:
    from .diff import Side


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


@dataclasses.dataclass(slots=True)
class Pending:
    """A layer as known before it is read (from the manifest and config, or its file): what
    the browser's layer list shows at once, and how to read it."""

    name: str
    created_by: str | None
    source_size: int | None          # an OCI layer's blob
    nydus_size: int | None           # a Nydus layer's blob
    read: Callable[[], LayerInput]


@dataclasses.dataclass(slots=True)
class Plan:
    """An image's layers, lowest first, not read yet; for a Nydus image reference also its
    merged bootstrap (`merged()` opens it: the final tree without reading a layer)."""

    layers: list[Pending]
    merged: Callable[[], Image] | None = None


def plan_layers(paths: list[str], blob_dirs: tuple[str, ...] = (), chunks: bool = True) -> Plan:
    """Layer files, lowest first: Nydus layer files and OCI layers, in any mix. Without
    `chunks`, Nydus layers are read without their chunk lists (`figures` reads them later)."""
    out = []
    for p in paths:
        nydus = is_nydus(p)              # (also: one clear line for a path that is not there)
        size = os.path.getsize(p)
        if nydus:
            out.append(Pending(os.path.basename(p), None, None, size,
                               functools.partial(from_nydus_layer, p, blob_dirs=blob_dirs, chunks=chunks)))
        else:
            out.append(Pending(os.path.basename(p), None, size, None, functools.partial(from_oci_tar, p)))
    return Plan(out)


def load_layers(paths: list[str], blob_dirs: tuple[str, ...] = (), chunks: bool = True) -> list[LayerInput]:
    """The layers of `plan_layers`, read."""
    return list(read_in_order(plan_layers(paths, blob_dirs, chunks).layers))


def read_in_order(layers: list[Pending], threads: int = 2) -> Iterator[LayerInput]:
    """Read the layers on `threads` threads (inflating a layer releases the GIL, so two layers
    read on two cores overlap) and yield them lowest first; the first error, in layer order,
    is raised. The threads are daemons: a browser that quits does not wait for a layer."""
    results: dict[int, LayerInput | BaseException] = {}
    done = threading.Condition()
    todo = iter(range(len(layers)))
    stop = threading.Event()                 # no layer starts after an error or the end

    def reader() -> None:
        while True:
            with done:
                i = None if stop.is_set() else next(todo, None)
            if i is None:
                return
            try:
                got: LayerInput | BaseException = layers[i].read()
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, in order
                got = e
            with done:
                results[i] = got
                if isinstance(got, BaseException):
                    stop.set()
                done.notify_all()

    for _ in range(min(threads, len(layers))):
        threading.Thread(target=reader, name="explore-read", daemon=True).start()
    try:
        for i in range(len(layers)):
            with done:
                while i not in results:
                    done.wait()
                got = results.pop(i)
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()


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
    from .diff import nydus_side, oci_side     # (not on the browser's way to its first screen)

    if is_reference(arg):
        from ..image.nydus import open_any

        if is_nydus_arg(arg, **options):
            with open_any(arg, **options) as image:
                return nydus_side(arg, image, content)
        from ..image import open_source, resolve
        from ..image.resolve import check_diff_ids, tar_layers

        with open_source(arg, **options) as source, tempfile.TemporaryDirectory(prefix="nydusfs-diff-") as spool:
            resolved = resolve(source)[0]
            check_diff_ids(resolved, arg)
            layers = tar_layers(resolved, f"{arg}: manifest {resolved.manifest.digest}")
            return oci_side(arg, [_blob_file(source, d.digest, spool) for d in layers])
    if is_nydus(arg):
        with open_image(arg, blob_dirs) as image:
            return nydus_side(arg, image, content)
    return oci_side(arg, [arg])


def load_image(text: str, platform: Any = None, chunks: bool = True, **options: Any) -> list[LayerInput]:
    """The layers of `plan_image`, read."""
    with plan_image(text, platform, chunks, **options) as plan:
        return list(read_in_order(plan.layers))


@contextlib.contextmanager
def plan_image(text: str, platform: Any = None, chunks: bool = True, **options: Any) -> Iterator[Plan]:
    """The layers of an image reference (OCI, or Nydus: its blob layers, each holding its own
    layer bootstrap), with `created_by` from the config history and sizes from the manifest;
    read while the plan is open. Blobs are read where they lie in a layout; others are spooled
    to a temporary directory when read. Without `chunks`, Nydus blobs read in place are read
    without their chunk lists."""
    from ..image import open_source, resolve
    from ..image.nydus import bootstrap_layer
    from ..image.resolve import check_diff_ids, tar_layers

    # a reader thread may still be copying a blob when the browser quits: the spool goes anyway
    with open_source(text, **options) as source, \
            tempfile.TemporaryDirectory(prefix="nydusfs-explore-", ignore_cleanup_errors=True) as spool:
        blobs = _Blobs(source, spool)
        resolved = resolve(source, platform)[0]
        history = [h.get("created_by") for h in resolved.config.get("history") or []
                   if isinstance(h, dict) and not h.get("empty_layer")]
        boot = bootstrap_layer(resolved.manifest)
        check_diff_ids(resolved, text)
        layers = ([d for d in resolved.manifest.layers if d is not boot] if boot is not None
                  else tar_layers(resolved, f"{text}: manifest {resolved.manifest.digest}"))
        out = []
        for i, d in enumerate(layers):
            created = history[i] if i < len(history) and isinstance(history[i], str) else None
            out.append(Pending(d.digest, created, None if boot else d.size, d.size if boot else None,
                               functools.partial(_read_blob, blobs, d, created, boot is not None, chunks)))
        opened: list[Image] = []

        def merged() -> Image:
            assert boot is not None
            opened.append(open_image(blobs.file(boot.digest)))
            return opened[-1]

        try:
            yield Plan(out, merged if boot is not None else None)
        finally:
            blobs.close()
            for image in opened:
                image.close()


def _read_blob(blobs: "_Blobs", d: Any, created: str | None, nydus: bool, chunks: bool) -> LayerInput:
    path = blobs.file(d.digest)
    if nydus:
        later = not chunks and not path.startswith(blobs.spool)    # the spool goes away
        layer = from_nydus_layer(path, name=d.digest, created_by=created, chunks=not later)
        layer.nydus_size = d.size
    else:
        layer = from_oci_tar(path, name=d.digest, created_by=created)
        layer.source_size = d.size
    return layer


class _Blobs:
    """Blob files of an image source: in place (a layout), or copied into the spool one at a
    time (layers are read on several threads; the source is not shared between them), never
    once the spool is closed. Closing does not wait for a copy under way (quitting must not
    wait for a download)."""

    def __init__(self, source: Any, spool: str) -> None:
        self.source, self.spool = source, spool
        self.lock = threading.Lock()
        self.closed = False

    def file(self, digest: str) -> str:
        direct = getattr(self.source, "blob_path", lambda d: None)(digest)
        if direct is not None:
            return str(direct)
        with self.lock:
            if self.closed:
                raise UsageError("explore: the image was closed while its layers were read")
            return _blob_file(self.source, digest, self.spool)

    def close(self) -> None:
        self.closed = True


def _blob_file(source: Any, digest: str, spool: str) -> str:
    direct = getattr(source, "blob_path", lambda d: None)(digest)
    if direct is not None:
        return str(direct)
    path = os.path.join(spool, digest.split(":", 1)[-1])
    with source.open_blob(digest) as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return path
