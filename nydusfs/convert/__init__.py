"""`convert`: an OCI/Docker image -> a Nydus image as nydusify writes it (spec image.md §2-§6).

    result = convert("oci:src:v1", "oci:out:v1-nydus", ConvertOptions())

Source layers are converted in parallel, each streamed through `create` (never untarred) into a
Nydus blob named by its sha256 and kept in a layer cache; the blobs' bootstraps are merged;
then the bootstrap layer, the rewritten config and the manifest are written to the target, which
becomes visible only when everything is written. Imports neither rich, pyfuse3 nor trio.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Protocol

from ..errors import UsageError
from ..image import media
from ..image.manifest import Descriptor, digest_of
from ..image.nydus import cache_dir
from ..image.reference import looks_like_reference, parse
from ..image.resolve import Resolved, check_diff_ids, open_source, open_target, resolve, tar_layers
from ..image.source import ImageError, ImageSource, ImageTarget
from . import bootstrap as bootlayer
from .layer import LayerResult, convert_layer
from .options import ConvertOptions

__all__ = ["ConvertOptions", "ConvertResult", "Progress", "convert"]


class Progress(Protocol):
    def layer_start(self, digest: str, total: int) -> None: ...
    def layer_advance(self, digest: str, n: int) -> None: ...
    def layer_done(self, result: LayerResult) -> None: ...
    def phase(self, text: str) -> None: ...


class NoProgress:
    def layer_start(self, digest: str, total: int) -> None:
        pass

    def layer_advance(self, digest: str, n: int) -> None:
        pass

    def layer_done(self, result: LayerResult) -> None:
        pass

    def phase(self, text: str) -> None:
        pass


@dataclasses.dataclass
class ImageResult:
    platform: str
    source_digest: str
    manifest_digest: str
    manifest_size: int
    config_digest: str
    bootstrap_digest: str
    bootstrap_diff_id: str
    layers: list[LayerResult]
    dict_blobs: list[str]
    inode_count: int


@dataclasses.dataclass
class ConvertResult:
    source: str
    target: str
    digest: str                 # what the target's tag points at (manifest or index)
    media_type: str
    images: list[ImageResult]
    converted: int              # layers converted in this run
    reused: int                 # layers taken from the cache
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "digest": self.digest,
            "media_type": self.media_type, "layers_converted": self.converted,
            "layers_reused": self.reused, "seconds": round(self.seconds, 3),
            "images": [{
                "platform": i.platform, "source_manifest": i.source_digest,
                "manifest": i.manifest_digest, "config": i.config_digest,
                "bootstrap": i.bootstrap_digest, "bootstrap_diff_id": i.bootstrap_diff_id,
                "inodes": i.inode_count, "dict_blobs": i.dict_blobs,
                "layers": [{"source": r.source.digest, "source_size": r.source.size,
                            "source_media_type": r.source.media_type, "nydus": r.digest,
                            "nydus_size": r.size, "entries": r.entries,
                            "seconds": round(r.seconds, 3), "cached": r.cached}
                           for r in i.layers]} for i in self.images],
        }


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class _ChunkDict:
    """`--chunk-dict`: a Nydus image reference (its blobs are copied to the target) or a
    bootstrap file (its blobs are looked up next to it by id)."""

    def __init__(self, value: str | None, options: dict[str, Any]) -> None:
        self.path: str | None = None
        self.digest: str | None = None
        self.source: ImageSource | None = None
        self.blob_dir: str | None = None
        self.layers: dict[str, Descriptor] = {}
        if value is None:
            return
        if looks_like_reference(value):
            from ..image.nydus import extract_bootstrap, find

            self.source = open_source(value, **options)
            nydus = find(self.source)
            boot = extract_bootstrap(self.source, nydus.bootstrap)
            self.path, self.digest = boot.path, nydus.bootstrap.digest
            self.layers = {d.hex: d for d in nydus.blob_layers}
        else:
            from ..util.prefetch import parse_chunk_dict

            path = parse_chunk_dict(value)
            assert path is not None
            if not os.path.isfile(path):
                raise UsageError(f"--chunk-dict {value}: no such file")
            from .layer import hash_file

            self.path, self.digest = path, hash_file(path)
            self.blob_dir = os.path.dirname(os.path.abspath(path))

    def put(self, blob_id: str, target: ImageTarget) -> Descriptor:
        """Copy a dict blob the merged bootstrap references into the target."""
        digest = "sha256:" + blob_id
        if self.source is not None:
            desc = self.layers.get(blob_id)
            if desc is None:
                raise ImageError(f"chunk dict: blob {blob_id} is not a layer of the dict image")
            if not target.has_blob(digest):
                with self.source.open_blob(digest) as f:
                    target.put_blob(digest, desc.size, f)
            return desc
        assert self.blob_dir is not None
        path = os.path.join(self.blob_dir, blob_id)
        if not os.path.isfile(path):
            raise ImageError(f"chunk dict: blob {blob_id} not found in {self.blob_dir}")
        _put_file(target, digest, path)
        return Descriptor(media.NYDUS_BLOB, digest, os.path.getsize(path))

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def _put_file(target: ImageTarget, digest: str, path: str) -> None:
    put_file = getattr(target, "put_file", None)
    if put_file is not None:
        put_file(digest, path)
    elif not target.has_blob(digest):
        with open(path, "rb") as f:
            target.put_blob(digest, os.path.getsize(path), f)


def convert(src: str, dst: str, opts: ConvertOptions, progress: Any = None) -> ConvertResult:
    opts.validate()
    t0 = time.monotonic()
    progress = progress or NoProgress()
    src_ref, dst_ref = parse(src), parse(dst)
    same_file = src_ref.transport != "docker" and dst_ref.transport != "docker" and \
        os.path.abspath(src_ref.path) == os.path.abspath(dst_ref.path)
    if same_file and (dst_ref.transport != "oci" or src_ref.transport != "oci" or dst_ref.ref == src_ref.ref):
        raise UsageError(f"{dst}: the target would replace the source image; write the Nydus image "
                         "under another tag of the layout, or elsewhere")
    cache = opts.cache_dir or os.path.join(cache_dir(), "convert")
    source = open_source(src_ref, **opts.source_options)
    chunk_dict: _ChunkDict | None = None
    target: ImageTarget | None = None
    try:
        images = resolve(source, opts.platform, opts.all_platforms or opts.merge_platform and
                         opts.platform is None)
        for img in images:
            tar_layers(img, f"{src}: manifest {img.manifest.digest}")
            check_diff_ids(img, src)
            if not img.manifest.layers:
                raise ImageError(f"{src}: manifest {img.manifest.digest} has no layers")
        chunk_dict = _ChunkDict(opts.chunk_dict, opts.source_options)
        target_options = dict(opts.target_options)
        if src_ref.transport == "docker" and dst_ref.transport == "docker":
            target_options["mount_from"] = str(src_ref)   # used when both are on one registry
        target = open_target(dst_ref, **target_options)
        layers = _convert_layers(source, images, opts, cache, chunk_dict, progress)
        results = []
        nydus_entries = []
        for img in images:
            progress.phase(f"merging {len(img.manifest.layers)} layers")
            res, data, mt = _build_image(src, img, [layers[d.digest] for d in img.manifest.layers],
                                         opts, chunk_dict, target)
            results.append(res)
            nydus_entries.append((img, data, mt))
        progress.phase("writing the target")
        digest, media_type = _publish(source, images, nydus_entries, opts, target)
        target.commit()
        converted = sum(1 for r in layers.values() if not r.cached)
        return ConvertResult(src, dst, digest, media_type, results, converted,
                             len(layers) - converted, time.monotonic() - t0)
    finally:
        if target is not None:
            target.close()
        if chunk_dict is not None:
            chunk_dict.close()
        source.close()


def _convert_layers(source: ImageSource, images: list[Resolved], opts: ConvertOptions, cache: str,
                    chunk_dict: _ChunkDict, progress: Any) -> dict[str, LayerResult]:
    unique: dict[str, Descriptor] = {}
    for img in images:
        for layer in img.manifest.layers:
            unique.setdefault(layer.digest, layer)
    jobs = min(opts.workers, len(unique)) or 1
    # chunk compression threads per layer process: zstd releases the GIL, and a layer's tar
    # parsing leaves the CPUs idle part of the time, so each layer may use every CPU
    per_layer = os.cpu_count() or 1
    stop = threading.Event()
    running: set[Any] = set()          # worker processes, killed when the convert stops
    lock = threading.Lock()

    def one(layer: Descriptor) -> LayerResult:
        if stop.is_set():
            raise ImageError("stopped")
        key = opts.layer_key(layer.digest, chunk_dict.digest)
        progress.layer_start(layer.digest, layer.size)
        result = convert_layer(source, layer, opts, cache, key, chunk_dict.path,
                               lambda n: progress.layer_advance(layer.digest, n), per_layer,
                               (running, lock, stop))
        progress.layer_done(result)
        return result

    out: dict[str, LayerResult] = {}
    pool = cf.ThreadPoolExecutor(max_workers=jobs)
    futures = {pool.submit(one, layer): d for d, layer in unique.items()}
    try:
        for f in cf.as_completed(futures):
            out[futures[f]] = f.result()
    except BaseException:
        stop.set()
        with lock:
            for proc in running:  # SIGINT: the worker removes its temporary file and exits
                proc.send_signal(signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


def _build_image(src: str, img: Resolved, layers: list[LayerResult], opts: ConvertOptions,
                 chunk_dict: _ChunkDict, target: ImageTarget) -> tuple[ImageResult, bytes, str]:
    from ..merge import MergeOptions, merge

    merged = merge([r.path for r in layers],
                   MergeOptions(chunk_dict=chunk_dict.path, prefetch_policy="fs",
                                prefetch_patterns=list(opts.prefetch_patterns)))
    boot = merged.bootstrap()
    own = {r.digest[7:] for r in layers}
    metas: list[tuple[str, bytes]] = []
    if opts.fs_version == 6:
        seen: set[str] = set()
        for r in layers:
            if r.digest not in seen:
                seen.add(r.digest)
                meta = bootlayer.blob_meta(r.path)
                if meta is not None:
                    metas.append((r.digest[7:], meta))
    layer = bootlayer.build(boot, metas)

    # target media types: the source's, or OCI with --oci (spec §2)
    src_manifest = img.manifest
    oci = opts.oci or not media.is_docker(src_manifest.media_type)
    manifest_type = media.OCI_MANIFEST if oci else media.DOCKER_MANIFEST
    config_type = media.NYDUS_CONFIG if opts.merge_platform else \
        (media.TO_OCI.get(src_manifest.config.media_type, src_manifest.config.media_type) if oci
         else src_manifest.config.media_type)
    boot_type = media.OCI_LAYER_GZIP if oci else media.DOCKER_LAYER_GZIP

    blob_descs = [{"mediaType": media.NYDUS_BLOB, "digest": r.digest, "size": r.size,
                   "annotations": {media.ANN_BLOB: "true"}} for r in layers]
    dict_blobs = []
    for b in merged.tree.blobs:
        if b.blob_id not in own:
            d = chunk_dict.put(b.blob_id, target)
            dict_blobs.append(b.blob_id)
            blob_descs.append({"mediaType": media.NYDUS_BLOB, "digest": d.digest, "size": d.size,
                               "annotations": {media.ANN_BLOB: "true"}})
    for r in layers:
        _put_file(target, r.digest, r.path)
    import io

    target.put_blob(layer.digest, len(layer.data), io.BytesIO(layer.data))

    # the config: every field of the source kept; diff_ids and one history entry (spec §4)
    config = json.loads(img.config_data)
    config["rootfs"]["diff_ids"] = [d["digest"] for d in blob_descs] + [layer.diff_id]
    history = config.get("history")
    config["history"] = (history if isinstance(history, list) else []) + [dict(media.HISTORY_ENTRY)]
    config_data = _json(config)
    config_digest = digest_of(config_data)
    target.put_blob(config_digest, len(config_data), io.BytesIO(config_data))

    manifest = {
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": len(config_data)},
        "layers": blob_descs + [{"mediaType": boot_type, "digest": layer.digest, "size": len(layer.data),
                                 "annotations": {media.ANN_BOOTSTRAP: "true",
                                                 media.ANN_FS_VERSION: str(opts.fs_version)}}],
        "annotations": {media.ANN_SOURCE_DIGEST: src_manifest.digest,
                        media.ANN_SOURCE_REFERENCE: src,
                        media.ANN_FS_VERSION: str(opts.fs_version)},
    }
    data = _json(manifest)
    inodes = sum(1 for _ in merged.tree.walk())
    result = ImageResult(str(img.platform or ""), src_manifest.digest, digest_of(data), len(data),
                         config_digest, layer.digest, layer.diff_id, layers, dict_blobs, inodes)
    return result, data, manifest_type


def _platform_doc(img: Resolved) -> dict[str, Any] | None:
    if img.entry is not None and isinstance(img.entry.raw.get("platform"), dict):
        return dict(img.entry.raw["platform"])
    if img.platform is None:
        return None
    doc = {"architecture": img.platform.architecture, "os": img.platform.os}
    if img.platform.variant:
        doc["variant"] = img.platform.variant
    return doc


def _publish(source: ImageSource, images: list[Resolved], built: list[tuple[Resolved, bytes, str]],
             opts: ConvertOptions, target: ImageTarget) -> tuple[str, str]:
    """A single manifest, or an index of the Nydus manifests (--all-platforms), or with
    --merge-platform an index of the source manifests followed by the Nydus ones."""
    if len(built) == 1 and not opts.merge_platform and not opts.all_platforms:
        _, data, mt = built[0]
        target.put_manifest(data, mt)
        return digest_of(data), mt
    entries: list[dict[str, Any]] = []
    if opts.merge_platform:
        for img in images:  # the source images, copied as they are
            for d in [img.manifest.config, *img.manifest.layers]:
                if not target.has_blob(d.digest):
                    with source.open_blob(d.digest) as f:
                        target.put_blob(d.digest, d.size, f)
            m = img.manifest
            target.put_child_manifest(m.data, m.media_type)
            entry: dict[str, Any] = {"mediaType": m.media_type, "digest": m.digest, "size": len(m.data)}
            plat = _platform_doc(img)
            if plat is not None:
                entry["platform"] = plat
            entries.append(entry)
    for img, data, mt in built:
        digest = digest_of(data)
        target.put_child_manifest(data, mt)
        entry = {"mediaType": mt, "digest": digest, "size": len(data)}
        plat = _platform_doc(img)
        if opts.merge_platform:
            entry["platform"] = plat or {}
            entry["artifactType"] = media.NYDUS_ARTIFACT
        elif plat is not None:
            entry["platform"] = plat
        entries.append(entry)
    docker_list = (not opts.oci and not opts.merge_platform and images[0].index is not None
                   and images[0].index.media_type == media.DOCKER_LIST)
    index_type = media.DOCKER_LIST if docker_list else media.OCI_INDEX
    doc: dict[str, Any] = {"schemaVersion": 2}
    if not opts.merge_platform:  # nydusify's merged index has no mediaType in its body (§6)
        doc["mediaType"] = index_type
    doc["manifests"] = entries
    data = json.dumps(doc, indent=2).encode() if opts.merge_platform else _json(doc)
    target.put_manifest(data, index_type)
    return digest_of(data), index_type
