"""The Nydus image layout (spec image.md §2, §6, §9): find the Nydus manifest (also inside a
merged-platform index), its bootstrap layer, extract `image/image.boot` once into a cache keyed
by the layer digest, and open it with blobs read in place from the image."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from . import media
from .source import ImageError

if TYPE_CHECKING:   # the rest is imported where used: mounting a bootstrap file needs none of it
    from .manifest import Descriptor, Manifest, Platform
    from .resolve import Resolved
    from .source import ImageSource

MAX_BOOTSTRAP = 4 << 30
MAX_BOOTSTRAP_TAR = 8 << 30     # the whole bootstrap layer tar (bootstrap + blob.meta files)


@dataclasses.dataclass
class NydusImage:
    resolved: Resolved
    bootstrap: Descriptor         # the bootstrap layer
    fs_version: str               # from the annotation ("" when absent, e.g. legacy images)
    legacy: bool                  # nydusify <= 2.1 annotations

    @property
    def manifest(self) -> Manifest:
        return self.resolved.manifest

    @property
    def source(self) -> ImageSource:
        return self.resolved.source

    @property
    def blob_layers(self) -> list[Descriptor]:
        return [d for d in self.manifest.layers if d is not self.bootstrap]


def is_nydus_entry(entry: Descriptor) -> bool:
    features = entry.platform.os_features if entry.platform else ()
    return entry.artifact_type == media.NYDUS_ARTIFACT or media.NYDUS_OS_FEATURE in features


def bootstrap_layer(manifest: Manifest) -> Descriptor | None:
    """The last layer, when it carries the bootstrap annotation (every reader relies on the
    bootstrap being last)."""
    if manifest.layers and manifest.layers[-1].annotations.get(media.ANN_BOOTSTRAP) == "true":
        return manifest.layers[-1]
    return None


def find(source: ImageSource, platform: Platform | None = None) -> NydusImage:
    from .manifest import Manifest, host_platform
    from .resolve import child, load, top

    head = top(source)
    resolved: Resolved | None = None
    if isinstance(head, Manifest):
        resolved = load(source, head)
    else:
        wanted = platform or host_platform()
        fits = [e for e in head.manifests if e.media_type in media.MANIFESTS
                and (e.platform is None and len(head.manifests) == 1
                     or e.platform is not None and wanted.matches(e.platform))]
        flagged = [e for e in fits if is_nydus_entry(e)]
        for e in flagged or fits:  # unflagged entries: a Nydus one is told by its last layer
            m = child(source, head, e)
            if bootstrap_layer(m) is not None:
                resolved = load(source, m, head, e)
                break
        if resolved is None:
            offered = ", ".join(sorted({str(e.platform) + (" (nydus)" if is_nydus_entry(e) else "")
                                        for e in head.manifests if e.platform})) or "none named"
            raise ImageError(f"{source.reference}: no Nydus image for platform {wanted} in the index "
                             f"(it offers: {offered})")
    assert resolved is not None
    boot = bootstrap_layer(resolved.manifest)
    if boot is None:
        raise ImageError(f"{source.reference}: not a Nydus image: the last layer of manifest "
                         f"{resolved.manifest.digest} has no {media.ANN_BOOTSTRAP}=true annotation")
    return NydusImage(resolved, boot, boot.annotations.get(media.ANN_FS_VERSION, ""),
                      media.ANN_BLOB_IDS in boot.annotations)


def cache_dir() -> str:
    """$NYDUSFS_CACHE_DIR, else $XDG_CACHE_HOME/nydusfs, else ~/.cache/nydusfs."""
    explicit = os.environ.get("NYDUSFS_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nydusfs")


@dataclasses.dataclass
class Bootstrap:
    path: str                 # the extracted image.boot
    diff_id: str              # sha256 of the uncompressed bootstrap layer tar
    members: list[str]        # member names of that tar, in order


class _Hashing:
    """The decompressed bootstrap layer, hashed as read; bounded, so that a compression bomb
    is an error and not hours of inflating."""

    def __init__(self, raw: Any, what: str) -> None:
        self.raw, self.hash, self.size, self.what = raw, hashlib.sha256(), 0, what

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        if self.size > MAX_BOOTSTRAP_TAR:
            raise ImageError(f"{self.what}: more than {MAX_BOOTSTRAP_TAR} bytes once decompressed")
        return data


def extract_bootstrap(source: ImageSource, layer: Descriptor, cache: str | None = None) -> Bootstrap:
    """`image/image.boot` of the bootstrap layer, extracted once into the cache (keyed by the
    layer digest, verified while read) and reused afterwards."""
    import tarfile

    from ..util.streams import open_decompressed

    base = os.path.join(cache or cache_dir(), "bootstraps")
    path = os.path.join(base, layer.hex + ".boot")
    info = os.path.join(base, layer.hex + ".json")
    if os.path.isfile(path) and os.path.isfile(info):
        try:
            with open(info, encoding="utf-8") as f:
                doc = json.load(f)
            return Bootstrap(path, doc["diff_id"], list(doc["members"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is rebuilt
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as e:
        raise ImageError(f"bootstrap cache {base}: {e.strerror}") from None
    what = f"{source.reference}: bootstrap layer {layer.digest}"
    tmp = f"{path}.{os.getpid()}.tmp"
    found = False
    members: list[str] = []
    try:
        with source.open_blob(layer.digest) as raw:
            stream = _Hashing(open_decompressed(raw), what)
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
                    for m in tf:
                        members.append(m.name)
                        name = m.name.removeprefix("./")
                        if m.isfile() and not found and name in (media.BOOTSTRAP_MEMBER,
                                                                 *media.LEGACY_BOOTSTRAP_MEMBERS):
                            if m.size > MAX_BOOTSTRAP:
                                raise ImageError(f"{what}: {name} is {m.size} bytes, more than "
                                                 f"{MAX_BOOTSTRAP}")
                            src = tf.extractfile(m)
                            assert src is not None
                            with open(tmp, "wb") as out:
                                while chunk := src.read(1 << 20):
                                    out.write(chunk)
                            found = True
                while stream.read(1 << 20):  # the diff_id covers the whole tar
                    pass
            except ImageError:
                raise
            except Exception as e:  # noqa: BLE001 - any codec's or tarfile's complaint: not a readable tar
                raise ImageError(f"{what}: not a readable gzip tar ({e or type(e).__name__})") from None
        if not found:
            raise ImageError(f"{what}: no member {media.BOOTSTRAP_MEMBER} (members: "
                             f"{', '.join(members)[:200] or 'none'})")
        diff_id = "sha256:" + stream.hash.hexdigest()
        os.replace(tmp, path)
        with open(info + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"diff_id": diff_id, "members": members}, f)
        os.replace(info + ".tmp", info)
        return Bootstrap(path, diff_id, members)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_reader(nydus: NydusImage, cache_bytes: int | None = None, cache: str | None = None) -> Any:
    """A reader (nydusfs.reader.Image) of the Nydus image: the cached bootstrap, with every
    blob read in place through the image source (by blob id = layer digest)."""
    from ..reader import BlobStore, open_image

    boot = extract_bootstrap(nydus.source, nydus.bootstrap, cache)
    reader: Any = open_image(boot.path)
    layers = {d.hex: d.size for d in nydus.blob_layers}
    source = nydus.source
    remote = bool(getattr(source, "remote", False))

    def ranges(blob_id: str) -> Any:
        if blob_id not in layers:
            raise ImageError(f"{source.reference}: blob {blob_id} of the bootstrap is not a layer "
                             "of the manifest")
        if remote:      # the size from the manifest: opening a blob costs no request
            return source.range_reader("sha256:" + blob_id, layers[blob_id])  # type: ignore[call-arg]
        return source.range_reader("sha256:" + blob_id)

    store = BlobStore(reader.blobs, ranges=ranges) if cache_bytes is None else \
        BlobStore(reader.blobs, ranges=ranges, cache_bytes=cache_bytes)
    reader.blob_store = store
    reader.blob_ranges = ranges             # blob id -> its RangeReader (mount --prefetch-all)
    reader.remote_blobs = remote
    return reader


def open_nydus(text: str, platform: Platform | None = None, cache_bytes: int | None = None,
               **options: Any) -> Any:
    """Open a Nydus image reference as a reader; the source is closed with the reader.
    `options` go to the image source (registry options, docs/registry.md; for docker://
    also the chunk cache's: cache_dir, cache_limit, bandwidth_limit, retry_time)."""
    from .resolve import open_source

    source = open_source(text, **options)
    try:
        reader = open_reader(find(source, platform), cache_bytes)
    except BaseException:
        source.close()
        raise
    close = reader.close

    def close_both() -> None:
        close()
        source.close()

    reader.close = close_both
    reader.source = source      # its stats() (a registry's requests) reach `nydusfs stats`
    return reader


def open_any(arg: str, blob_dirs: Any = (), cache_bytes: int | None = None,
             platform: Platform | None = None, **options: Any) -> Any:
    """What the verbs that take a bootstrap open: an image reference (oci:..., ...) as a Nydus
    image, anything else (an existing file first) exactly as before, with `open_image`."""
    if not os.path.exists(arg):     # (an existing file needs no reference parser)
        from .reference import looks_like_reference

        if looks_like_reference(arg):
            return open_nydus(arg, platform, cache_bytes, **options)
    from ..reader import open_image

    return open_image(arg, blob_dirs, cache_bytes)


def absolute(arg: str) -> str:
    """An argument with its path made absolute: a reference's path, or a plain file's."""
    if not os.path.exists(arg):
        from .reference import looks_like_reference, parse

        if looks_like_reference(arg):
            return str(parse(arg).absolute())
    return os.path.abspath(arg)
