"""Images as the unit: references, manifests/configs/indexes, local sources and targets, and
the Nydus image layout (spec image.md). Imports neither pyfuse3, trio nor rich."""

from __future__ import annotations

from .manifest import Platform, host_platform, parse_platform
from .reference import Reference, looks_like_reference, parse
from .resolve import Resolved, open_source, open_target, resolve
from .source import ImageError, ImageSource, ImageTarget, RangeReader

__all__ = [
           "ImageError",
           "ImageSource",
           "ImageTarget",
           "Platform",
           "RangeReader",
           "Reference",
           "Resolved",
           "host_platform",
           "looks_like_reference",
           "open_source",
           "open_target",
           "parse",
           "parse_platform",
           "resolve",
]
