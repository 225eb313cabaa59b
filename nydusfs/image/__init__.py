"""Images as the unit: references, manifests/configs/indexes, local sources and targets, and
the Nydus image layout (spec image.md). Imports neither pyfuse3, trio nor rich.

The names below are loaded on first use: `mount` of a bootstrap file needs none of them, and
importing them all took ~10 ms of its start-up."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manifest import Platform, host_platform, parse_platform
    from .reference import Reference, looks_like_reference, parse
    from .resolve import Resolved, open_source, open_target, resolve
    from .source import ImageError, ImageSource, ImageTarget, RangeReader

_WHERE = {
    "Platform": "manifest", "host_platform": "manifest", "parse_platform": "manifest",
    "Reference": "reference", "looks_like_reference": "reference", "parse": "reference",
    "Resolved": "resolve", "open_source": "resolve", "open_target": "resolve", "resolve": "resolve",
    "ImageError": "source", "ImageSource": "source", "ImageTarget": "source", "RangeReader": "source",
}

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
assert sorted(__all__) == sorted(_WHERE)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # the import system binds every submodule loaded as an attribute of its package: the
        # function `resolve` keeps that name over its module, as when it was imported eagerly
        if name == "resolve" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
