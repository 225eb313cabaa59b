"""`merge`: per-layer bootstraps, lowest layer first, into one image bootstrap (merge.md).

    result = merge([layer0, layer1, ...], MergeOptions(...))
    data = result.bootstrap()          # RAFS v5 or v6 bytes, the sources' version

Each source is loaded into a Tree and applied on top of the merged tree with OCI whiteout rules
(overlay.py: the layer's whiteouts first, then hard links to lower files are bound (links.py),
then its entries), and the blob table is rebuilt (blobs.py). The merged Tree is written by the same
writers `create` uses.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

from .. import __version__
from ..format.choices import PrefetchPolicy
from ..write.bootstrap_v5 import write_v5
from ..write.bootstrap_v6 import write_v6
from ..tree.load import load_tree
from ..tree.node import Node, Tree
from . import compat, prefetch
from .sources import label, open_input
from .blobs import BlobTable, identity
from .options import MergeOptions
from .overlay import Rules, apply

__all__ = ["merge", "MergeOptions", "MergeResult"]


@dataclasses.dataclass
class MergeResult:
    tree: Tree
    layers: list[str]
    warnings: list[str]
    timings: dict[str, float]

    def bootstrap(self) -> bytes:
        start = time.perf_counter()
        data, missing = (write_v5 if self.tree.version == 5 else write_v6)(self.tree)
        self.timings["write"] = time.perf_counter() - start
        assert not missing, "prefetch paths were checked against the tree"
        return bytes(data)

    def summary(self, bootstrap_path: str) -> dict[str, Any]:
        """What `--output-json` writes: upstream's fields plus the blob table and counts."""
        tree = self.tree
        entries = inodes = 0
        seen: set[int] = set()
        for _path, node in tree.walk():
            entries += 1
            if node.children is not None or id(node) not in seen:
                inodes += 1
                seen.add(id(node))
        return {
            "version": f"nydusfs {__version__}",
            "bootstrap": bootstrap_path,
            "fs_version": str(tree.version),
            "compressor": tree.compressor,
            "digester": tree.digester,
            "chunk_size": tree.chunk_size,
            "blobs": [b.blob_id for b in tree.blobs],
            "blob_table": [{"blob_id": b.blob_id, "compressor": b.compressor,
                            "chunk_count": b.chunk_count, "compressed_size": b.compressed_size,
                            "uncompressed_size": b.uncompressed_size, "features": b.features}
                           for b in tree.blobs],
            "layers": self.layers,
            "inode_count": inodes,
            "entry_count": entries,
            "prefetch": [os.fsdecode(p) for p in tree.prefetch],
            "warnings": self.warnings,
            "trace": {k: round(v, 6) for k, v in self.timings.items()},
        }


def merge(sources: Sequence[str | os.PathLike], options: MergeOptions | None = None) -> MergeResult:
    """Merge the sources (lowest layer first) into one Tree; see the module doc."""
    opts = options or MergeOptions()
    paths = [os.fspath(s) for s in sources]
    opts.validate(paths)
    timings = {"load": 0.0, "overlay": 0.0}
    rules = Rules(opts.whiteout_spec)
    table = BlobTable()
    sizes = compat.BlobChunkSizes()
    reference: compat.LayerConfig | None = None
    configs: list[compat.LayerConfig] = []
    dict_ids: set[str] = set()
    root: Node | None = None
    layers: list[str] = []

    def admit(image: Any, what: str) -> compat.LayerConfig:
        nonlocal reference
        config = compat.LayerConfig.of(image, what)
        reference = reference or config
        compat.check(reference, config)
        for b in image.blobs:
            sizes.check(b.chunk_size, f"blob {b.blob_id} of {what}")
        return config

    if opts.chunk_dict is not None:
        with open_input(opts.chunk_dict) as image:
            reference = compat.LayerConfig.of(image, label("chunk dict", opts.chunk_dict))
            dict_ids = {identity(b) for b in image.blobs}
    first_layer = 0
    if opts.parent_bootstrap is not None:
        start = time.perf_counter()
        what = label("parent bootstrap", opts.parent_bootstrap)
        with open_input(opts.parent_bootstrap) as image:
            configs.append(admit(image, what))
            table.add_parent(0, image.blobs, what)
            root = load_tree(image, 0).root   # an already merged image: taken as it is
        layers.append(opts.parent_bootstrap)
        first_layer = 1
        timings["load"] += time.perf_counter() - start
    for i, path in enumerate(paths):
        start = time.perf_counter()
        what = label(f"layer {i}", path)
        layer = first_layer + i
        with open_input(path) as image:
            configs.append(admit(image, what))
            table.add_source(layer, i, path, image.blobs, dict_ids, opts, what)
            upper = load_tree(image, layer).root
        layers.append(path)
        mid = time.perf_counter()
        root = apply(root, upper, rules, what)
        timings["load"] += mid - start
        timings["overlay"] += time.perf_counter() - mid
    assert root is not None and reference is not None

    start = time.perf_counter()
    last = configs[-1]
    blobs = table.finalize(root, last.version)
    timings["blobs"] = time.perf_counter() - start
    warnings: list[str] = []
    chosen: list[bytes] = []
    if opts.prefetch_policy == PrefetchPolicy.FS:
        chosen, more = prefetch.select(root, opts.prefetch_patterns)
        warnings += more
    tree = Tree(root=root, version=last.version, compressor=last.compressor,
                digester=last.digester, chunk_size=reference.chunk_size,
                explicit_uid_gid=reference.explicit_uid_gid, blobs=blobs, prefetch=chosen,
                extra_flags=compat.merged_extra_flags(configs, last.version,
                                                      [b.features for b in blobs]))
    return MergeResult(tree=tree, layers=layers, warnings=warnings, timings=timings)
