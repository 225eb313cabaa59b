"""From a reference to image manifests: open the backend, follow an index to the platform's
manifest, read and check the config."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import media
from .manifest import (
    MAX_CONFIG,
    MAX_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    digest_of,
    host_platform,
    kind_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from .reference import Reference, parse
from .source import ImageError, ImageSource, ImageTarget


def _registry(name: str) -> Any:
    """`open_source` or `open_target` of nydusfs.registry, imported only for docker:// (httpx
    is not loaded otherwise)."""
    try:
        from .. import registry
    except ImportError:
        raise ImageError("registry references are not supported by this build "
                         "(the nydusfs.registry module is missing)") from None
    return getattr(registry, name)


def open_source(text: str | Reference, **options: Any) -> ImageSource:
    ref = text if isinstance(text, Reference) else parse(text)
    if ref.transport == "docker":
        return _registry("open_source")(str(ref), **options)
    from .local import DockerArchiveSource, OCIArchiveSource, OCILayoutSource

    cls = {"oci": OCILayoutSource, "oci-archive": OCIArchiveSource,
           "docker-archive": DockerArchiveSource}[ref.transport]
    return cls(ref)


def open_target(text: str | Reference, **options: Any) -> ImageTarget:
    ref = text if isinstance(text, Reference) else parse(text)
    if ref.transport == "docker":
        return _registry("open_target")(str(ref), **options)
    from .target import OCIArchiveTarget, OCILayoutTarget

    if ref.transport == "oci":
        return OCILayoutTarget(ref)
    if ref.transport == "oci-archive":
        return OCIArchiveTarget(ref)
    raise ImageError(f"{ref}: cannot write {ref.transport}: images (write oci: or oci-archive:)")


@dataclasses.dataclass
class Resolved:
    """One image manifest with its config, and the index it was found in (if any)."""

    source: ImageSource
    manifest: Manifest
    config_data: bytes
    config: dict[str, Any]
    platform: Platform | None           # from the index entry, else from the config
    index: Index | None = None
    entry: Descriptor | None = None     # the index entry pointing at the manifest


def tar_layers(resolved: Resolved, where: str) -> list[Descriptor]:
    """The layers of an OCI or Docker image, each checked to be a tar layer."""
    for i, layer in enumerate(resolved.manifest.layers):
        if layer.media_type not in media.TAR_LAYERS:
            raise ImageError(f"{where}: layer {i} ({layer.digest}): media type {layer.media_type!r} "
                             "is not an OCI/Docker tar layer (already a Nydus image?)")
    return list(resolved.manifest.layers)


def check_diff_ids(resolved: Resolved, where: str) -> None:
    """One diff_id in the config per layer of the manifest."""
    n, ids = len(resolved.manifest.layers), len(resolved.config["rootfs"]["diff_ids"])
    if n != ids:
        raise ImageError(f"{where}: manifest {resolved.manifest.digest} lists {n} layers, its config "
                         f"{ids} diff_ids")


def top(source: ImageSource) -> Manifest | Index:
    data, mt = source.index_or_manifest()
    what = f"{source.reference}: manifest"
    kind, _ = kind_of(data, mt, what)
    if kind == "index":
        return parse_index(data, mt, f"{source.reference}: index")
    return parse_manifest(data, mt, what)


def load(source: ImageSource, manifest: Manifest, index: Index | None = None,
         entry: Descriptor | None = None) -> Resolved:
    what = f"{source.reference}: config {manifest.config.digest}"
    data = source.read_blob(manifest.config.digest, MAX_CONFIG)
    if len(data) != manifest.config.size:
        raise ImageError(f"{what}: the manifest's field 'config.size' says {manifest.config.size} "
                         f"bytes, the config has {len(data)}")
    config = parse_config(data, what)
    for i, layer in enumerate(manifest.layers):
        held = source.stored_size(layer.digest)
        if held is not None and held != layer.size:
            raise ImageError(f"{source.reference}: manifest {manifest.digest}: layer {i} ({layer.digest}): "
                             f"field 'size' says {layer.size} bytes, the blob has {held}")
    plat = entry.platform if entry is not None and entry.platform else None
    if plat is None and isinstance(config.get("os"), str) and isinstance(config.get("architecture"), str):
        plat = Platform(config["os"], config["architecture"], str(config.get("variant") or ""))
    return Resolved(source, manifest, data, config, plat, index, entry)


def child(source: ImageSource, index: Index, entry: Descriptor) -> Manifest:
    data, _ = source.manifest(entry.digest)
    what = f"{source.reference}: manifest {entry.digest}"
    if len(data) > MAX_MANIFEST:
        raise ImageError(f"{what}: {len(data)} bytes, more than the {MAX_MANIFEST} allowed")
    found = digest_of(data)
    if found != entry.digest:
        raise ImageError(f"{what}: content does not match its digest (found {found})")
    if len(data) != entry.size:
        raise ImageError(f"{what}: the index entry's field 'size' says {entry.size} bytes, the "
                         f"manifest has {len(data)}")
    return parse_manifest(data, entry.media_type, what)


def resolve(source: ImageSource, platform: Platform | None = None,
            all_platforms: bool = False) -> list[Resolved]:
    """The image manifests the reference means: one (the platform's, default the host's), or
    with `all_platforms` every image manifest of an index."""
    head = top(source)
    if isinstance(head, Manifest):
        one = load(source, head)
        if platform is not None and one.platform is not None and not platform.matches(one.platform):
            raise ImageError(f"{source.reference}: the image is for {one.platform}, not {platform} "
                             "(a single manifest, not an index)")
        return [one]
    images = [e for e in head.manifests if e.media_type in media.MANIFESTS
              and e.artifact_type != media.NYDUS_ARTIFACT
              and media.NYDUS_OS_FEATURE not in (e.platform.os_features if e.platform else ())]
    if all_platforms:
        if not images:
            raise ImageError(f"{source.reference}: the index holds no image manifest")
        return [load(source, child(source, head, e), head, e) for e in images]
    entry = select(source.reference, images, platform)
    one = load(source, child(source, head, entry), head, entry)
    if platform is not None and one.platform is not None and not platform.matches(one.platform):
        raise ImageError(f"{source.reference}: the image is for {one.platform}, not {platform} "
                         "(the index's only entry names no platform)")
    return [one]


def select(reference: str, entries: list[Descriptor], platform: Platform | None) -> Descriptor:
    wanted = platform or host_platform()
    found = [e for e in entries if e.platform is not None and wanted.matches(e.platform)]
    if not found and len(entries) == 1 and entries[0].platform is None:
        found = entries     # the config tells its platform: the caller compares
    if not found:
        offered = ", ".join(sorted({str(e.platform) for e in entries if e.platform})) or "none named"
        raise ImageError(f"{reference}: no image for platform {wanted} in the index "
                         f"(it offers: {offered}; choose with --platform)")
    return found[0]
