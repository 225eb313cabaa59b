"""Images in OCI distribution registries (`docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`).

`open_source` and `open_target` are what the image reference parser calls. Options (all
optional): `creds` ("USER[:PASS]"), `authfile`, `tls_verify` (default True), `cert_dir`,
`plain_http` (loopback registries fall back to plain HTTP by themselves), `timeout` (seconds
per request phase), `retry_time` (seconds one operation may spend retrying), `cache_dir` and
`cache_limit` (bytes; sources: lazy reads through the on-disk cache), `mount_from` (targets: a
`docker://` reference on the same registry to mount blobs from). See docs/registry.md.
"""

from __future__ import annotations

from typing import Any

from nydusfs.registry.errors import RegistryError
from nydusfs.registry.reference import Reference, parse_reference
from nydusfs.registry.source import RegistrySource, RegistryTarget

__all__ = [
    "Reference",
    "RegistryError",
    "RegistrySource",
    "RegistryTarget",
    "open_source",
    "open_target",
    "parse_reference",
]


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """Options left at None mean "the default" (a CLI flag not given)."""
    return {k: v for k, v in options.items() if v is not None}


def open_source(reference: str, **options: Any) -> RegistrySource:
    """The image `reference` points at, read from its registry (the registry is contacted
    once here: unreachable registries and refused credentials fail now, in one line)."""
    return RegistrySource(reference, **_given(options))


def open_target(reference: str, **options: Any) -> RegistryTarget:
    """A registry repository to push an image to; published at `commit()`."""
    return RegistryTarget(reference, **_given(options))
