"""The image-level rules of `check` (nydusify check's, and more): each finding names its rule.

- manifest: media types and annotations of the Nydus layout, layer and diff_id counts, and a
  data blob's diff_id equal to its digest (the layer is not compressed);
- bootstrap: the bootstrap layer's tar hashes to the last diff_id; every blob of the bootstrap
  is a layer of the manifest and every blob layer is a blob of the bootstrap or has no data;
  the RAFS version is the annotated one;
- config: the source's and the Nydus image's `config` objects are equal (ArgsEscaped aside),
  as are os and architecture;
- chunks (NYDUS alone): every chunk read through the image and checked against its digest.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import NydusfsError
from . import media
from .nydus import Bootstrap, NydusImage
from .resolve import Resolved


@dataclasses.dataclass(frozen=True)
class Finding:
    rule: str            # manifest | bootstrap | config | chunks
    where: str           # the layer, field or path concerned
    expected: Any
    found: Any


def manifest_rule(nydus: NydusImage) -> list[Finding]:
    out: list[Finding] = []
    m = nydus.manifest
    ids = nydus.resolved.config["rootfs"]["diff_ids"]
    if len(ids) != len(m.layers):
        out.append(Finding("manifest", "rootfs.diff_ids", f"{len(m.layers)} (one per layer)", len(ids)))
    boot = m.layers[-1]
    if boot.media_type not in (media.OCI_LAYER_GZIP, media.DOCKER_LAYER_GZIP):
        out.append(Finding("manifest", f"layer {len(m.layers) - 1} mediaType",
                           "a gzip tar layer type", boot.media_type))
    fs = boot.annotations.get(media.ANN_FS_VERSION)
    if not nydus.legacy and fs not in ("5", "6"):
        out.append(Finding("manifest", f"layer {len(m.layers) - 1} annotation {media.ANN_FS_VERSION}",
                           "5 or 6", fs))
    for i, layer in enumerate(m.layers[:-1]):
        if layer.media_type != media.NYDUS_BLOB:
            out.append(Finding("manifest", f"layer {i} mediaType", media.NYDUS_BLOB, layer.media_type))
        if layer.annotations.get(media.ANN_BLOB) != "true" and not nydus.legacy:
            out.append(Finding("manifest", f"layer {i} annotation {media.ANN_BLOB}", "true",
                               layer.annotations.get(media.ANN_BLOB)))
        if i < len(ids) and ids[i] != layer.digest:
            out.append(Finding("manifest", f"layer {i} diff_id", layer.digest, ids[i]))
    return out


def source_manifest_rule(source: Resolved) -> list[Finding]:
    ids = source.config["rootfs"]["diff_ids"]
    n = len(source.manifest.layers)
    return [] if len(ids) == n else [Finding("manifest", "source rootfs.diff_ids", n, len(ids))]


def bootstrap_rule(nydus: NydusImage, boot: Bootstrap, reader: Any) -> list[Finding]:
    from ..format.layer import detect

    out: list[Finding] = []
    ids = nydus.resolved.config["rootfs"]["diff_ids"]
    if not ids or ids[-1] != boot.diff_id:
        out.append(Finding("bootstrap", "last rootfs.diff_ids entry (sha256 of the bootstrap tar)",
                           boot.diff_id, ids[-1] if ids else None))
    fs = nydus.bootstrap.annotations.get(media.ANN_FS_VERSION)
    if fs and fs != str(reader.version):
        out.append(Finding("bootstrap", f"annotation {media.ANN_FS_VERSION}", f"RAFS v{reader.version}", fs))
    layers = {d.hex: (i, d) for i, d in enumerate(nydus.blob_layers)}
    referenced = {b.blob_id for b in reader.blobs}
    for b in reader.blobs:
        if b.blob_id not in layers:
            out.append(Finding("bootstrap", f"blob {b.blob_id}", "a blob layer of the manifest", "none"))
    for hexdigest, (i, d) in layers.items():
        if hexdigest in referenced or d.annotations.get(media.ANN_REF):
            continue
        try:
            rng = nydus.source.range_reader(d.digest)
        except NydusfsError as e:  # a missing blob: say so under this rule
            out.append(Finding("bootstrap", f"layer {i} ({d.digest})", "a readable blob", str(e)))
            continue
        try:
            layout = detect(rng, d.digest)
            has_data = layout.blob is not None and layout.blob.size > 0
        except (NydusfsError, OSError) as e:
            out.append(Finding("bootstrap", f"layer {i} ({d.digest})", "a Nydus blob", str(e)))
            continue
        finally:
            rng.close()
        if has_data:
            out.append(Finding("bootstrap", f"layer {i} ({d.digest})",
                               "a blob of the bootstrap (it holds chunk data)", "not in the blob table"))
    return out


def config_rule(source: Resolved, nydus: NydusImage) -> list[Finding]:
    out: list[Finding] = []
    a = dict(source.config.get("config") or {})
    b = dict(nydus.resolved.config.get("config") or {})
    a.pop("ArgsEscaped", None)
    b.pop("ArgsEscaped", None)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(Finding("config", f"config.{key}", _short(a.get(key)), _short(b.get(key))))
    for key in ("os", "architecture", "variant"):
        if source.config.get(key) != nydus.resolved.config.get(key):
            out.append(Finding("config", key, source.config.get(key), nydus.resolved.config.get(key)))
    return out


def chunks_rule(reader: Any) -> list[Finding]:
    from ..dump import verify

    return [Finding("chunks", f"{f['path']} chunk {f['index']} at file offset {f['file_offset']}",
                    "a chunk matching its digest", f["error"]) for f in verify(reader)]


def _short(value: Any) -> Any:
    text = json.dumps(value)
    return value if len(text) <= 200 else text[:200] + "..."
