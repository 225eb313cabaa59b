"""What a convert is asked to do; defaults are nydusify's (spec image.md §5.5)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from ..errors import UsageError
from ..format.blob import valid_chunk_size
from ..format.choices import FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor
from ..image.manifest import Platform
# bump when the per-layer output of the same options changes, so cached layers are redone
LAYER_FORMAT = 1


@dataclasses.dataclass
class ConvertOptions:
    fs_version: int = 6
    compressor: str = "zstd"
    chunk_size: int = 0x100000
    chunk_dict: str | None = None          # a Nydus image reference, or bootstrap=FILE / FILE
    prefetch_patterns: list[bytes] = dataclasses.field(default_factory=lambda: [b"/"])
    oci: bool = False                      # Docker media types -> OCI
    merge_platform: bool = False
    platform: Platform | None = None
    all_platforms: bool = False
    jobs: int = 0                          # 0: the CPU count
    cache_dir: str | None = None           # default: <nydusfs cache>/convert
    use_cache: bool = True
    # registry options (creds, authfile, tls_verify, cert_dir, plain_http) of each side, for
    # docker:// references; the chunk dict is read with the source's
    source_options: dict[str, object] = dataclasses.field(default_factory=dict)
    target_options: dict[str, object] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.fs_version not in FS_VERSIONS:
            raise UsageError(f"--fs-version must be 5 or 6, not {self.fs_version}")
        self.compressor = Compressor.parse("--compressor", self.compressor, WRITABLE_COMPRESSORS)
        if not valid_chunk_size(self.chunk_size):
            raise UsageError(f"--chunk-size must be a power of two between 0x1000 and 0x1000000, "
                             f"not 0x{self.chunk_size:x}")
        if self.jobs < 0:
            raise UsageError(f"-j must be at least 1 (0: the CPU count), not {self.jobs}")
        if self.platform is not None and self.all_platforms:
            raise UsageError("give --platform or --all-platforms, not both")

    @property
    def workers(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def layer_key(self, layer_digest: str, dict_digest: str | None) -> str:
        """Cache key of one converted layer: the source layer and every option that changes
        the bytes of its Nydus blob."""
        doc = {"format": LAYER_FORMAT, "layer": layer_digest, "fs_version": self.fs_version,
               "compressor": self.compressor, "chunk_size": self.chunk_size,
               "prefetch": [p.hex() for p in self.prefetch_patterns], "chunk_dict": dict_digest}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
