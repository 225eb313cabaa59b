"""What a merge is asked to do, validated before any source is opened."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from ..errors import UsageError
from ..format.choices import PrefetchPolicy, WhiteoutSpec


@dataclasses.dataclass
class MergeOptions:
    parent_bootstrap: str | None = None
    chunk_dict: str | None = None
    prefetch_policy: str = PrefetchPolicy.NONE
    prefetch_patterns: list[bytes] = dataclasses.field(default_factory=list)
    # the whiteout convention of the sources (overlay.py). `create` rewrites overlayfs markers as
    # OCI ones, so `overlayfs` is for bootstraps built elsewhere from overlayfs upper directories.
    whiteout_spec: str = WhiteoutSpec.OCI
    # one item per source, or None
    blob_digests: list[str] | None = None
    original_blob_ids: list[str] | None = None
    blob_sizes: list[int] | None = None
    blob_toc_digests: list[str] | None = None
    blob_toc_sizes: list[int] | None = None
    keep_blob_ids: bool = False

    def validate(self, sources: Sequence[str | os.PathLike]) -> None:
        if not sources:
            raise UsageError("merge needs at least one source bootstrap")
        PrefetchPolicy.parse("--prefetch-policy", self.prefetch_policy)
        WhiteoutSpec.parse("--whiteout-spec", self.whiteout_spec)
        for flag, values in (("--blob-digests", self.blob_digests),
                             ("--original-blob-ids", self.original_blob_ids),
                             ("--blob-sizes", self.blob_sizes),
                             ("--blob-toc-digests", self.blob_toc_digests),
                             ("--blob-toc-sizes", self.blob_toc_sizes)):
            if values is not None and len(values) != len(sources):
                raise UsageError(f"{flag}: expected one item per source ({len(sources)}), "
                                 f"found {len(values)}")
        for flag, values in (("--blob-digests", self.blob_digests),
                             ("--blob-toc-digests", self.blob_toc_digests)):
            for v in values or ():
                digest_bytes(flag, v)
        # the fields they fill: blob table compressed size (u64), v6 blob_toc_size (u32)
        for flag, values, limit in (("--blob-sizes", self.blob_sizes, (1 << 64) - 1),
                                    ("--blob-toc-sizes", self.blob_toc_sizes, (1 << 32) - 1)):
            for size in values or ():
                if size < 0:
                    raise UsageError(f"{flag}: sizes cannot be negative, found {size}")
                if size > limit:
                    raise UsageError(f"{flag}: {size} does not fit the blob table (the limit is {limit})")
        for v in self.original_blob_ids or ():
            if not strip_algo(v):
                raise UsageError("--original-blob-ids: empty blob id")


def strip_algo(value: str) -> str:
    """Blob ids are bare hex digests; accept the `sha256:` form registries print."""
    value = value.strip()
    return value[len("sha256:"):] if value.startswith("sha256:") else value


def digest_bytes(flag: str, value: str) -> bytes:
    """A 32-byte digest given as 64 hex characters (optionally prefixed by `sha256:`)."""
    text = strip_algo(value)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(f"{flag}: expected a sha256 digest (64 hex characters), found {value!r}")
    return raw


def split_list(flag: str, text: str | None) -> list[str] | None:
    """A comma-separated option value; None when the option was not given."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UsageError(f"{flag}: empty item in {text!r}")
    return items


def split_sizes(flag: str, text: str | None) -> list[int] | None:
    items = split_list(flag, text)
    if items is None:
        return None
    out = []
    for item in items:
        try:
            if len(item) > 40:  # past any size, and slow to convert
                raise ValueError(item)
            out.append(int(item, 0))
        except ValueError:
            raise UsageError(f"{flag}: expected a size in bytes, found {item[:60]!r}") from None
    return out
