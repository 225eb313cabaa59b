"""`--manifest`: every blob the bootstrap references must be a layer of the OCI image manifest.

Layers without data (an empty layer has no blob) may be absent from the blob table; the reverse
is not allowed: a blob that is no layer of the manifest could not be pulled by a runtime.
"""

from __future__ import annotations

import json
import re

from ..errors import FormatError
from ..reader import Image
from .compare import Difference

DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def layer_digests(path: str) -> set[str]:
    """The hex part of every layer digest of the manifest at `path`."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise FormatError("OCI image manifest", found="no such file", file=path) from None
    except (OSError, ValueError) as e:
        raise FormatError("OCI image manifest", expected="JSON", found=str(e), file=path) from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise FormatError("OCI image manifest", field="layers", expected="a list of descriptors",
                          found=type(layers).__name__, file=path,
                          hint="an image index must be resolved to one manifest first")
    out = set()
    for i, layer in enumerate(layers):
        digest = layer.get("digest") if isinstance(layer, dict) else None
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise FormatError("OCI image manifest", field=f"layers[{i}].digest",
                              expected="algorithm:hex", found=repr(digest), file=path)
        out.add(digest.split(":", 1)[1].lower())
    return out


def blob_differences(image: Image, manifest: str) -> list[Difference]:
    digests = layer_digests(manifest)
    out = []
    for b in image.blobs:
        if b.blob_id.lower() not in digests and b.raw_id.lower() not in digests:
            out.append(Difference(b"", "blob", "a layer of the manifest", b.blob_id))
    return out
