"""Manifests, indexes and configs (OCI and Docker media types), read strictly: every field a
reader relies on is checked and a bad one is reported by name, with the blob it came from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform as _platform
from typing import Any

from . import media
from .reference import DIGEST_RE
from .source import ImageError

MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20


@dataclasses.dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def matches(self, other: Platform) -> bool:
        """`self` is wanted, `other` is offered; an unnamed variant matches the default one."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant:
            return True
        default = {"arm64": "v8"}.get(self.architecture, "")
        return (other.variant or default) == self.variant


_MACHINES = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
             "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "i686": ("386", ""), "i386": ("386", ""), "ppc64le": ("ppc64le", ""),
             "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


def host_platform() -> Platform:
    arch, variant = _MACHINES.get(_platform.machine(), (_platform.machine(), ""))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"--platform {text!r}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str = ""
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclasses.dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    data: bytes
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str]
    doc: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Index:
    media_type: str
    digest: str
    data: bytes
    manifests: list[Descriptor]
    doc: dict[str, Any]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def shown(value: Any, limit: int = 120) -> str:
    """A value from an image inside a message: its repr, cut to `limit` characters (a field
    may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_json(data: bytes, what: str) -> Any:
    """JSON from an image (any top-level type); every way it can be malformed is an ImageError
    naming `what`, nesting too deep for the parser included."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{what}: not valid JSON ({e})") from None
    except RecursionError:
        raise ImageError(f"{what}: not valid JSON (arrays or objects nested too deep)") from None


def load_json(data: bytes, what: str) -> dict[str, Any]:
    doc = parse_json(data, what)
    if not isinstance(doc, dict):
        raise ImageError(f"{what}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _str(doc: dict[str, Any], key: str, what: str, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ImageError(f"{what}: field {key!r}: expected a string, found {value!r}"[:300])
    return value


def _annotations(doc: dict[str, Any], what: str) -> dict[str, str]:
    value = doc.get("annotations") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ImageError(f"{what}: field 'annotations': expected an object of strings")
    return dict(value)


def descriptor(doc: Any, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise ImageError(f"{what}: expected a descriptor object, found {type(doc).__name__}")
    media_type = _str(doc, "mediaType", what)
    digest = _str(doc, "digest", what)
    if not DIGEST_RE.fullmatch(digest):
        raise ImageError(f"{what}: field 'digest': expected sha256:<64 hex digits>, found {digest!r}"[:300])
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what}: field 'size': expected a non-negative integer, found {size!r}"[:300])
    plat = None
    p = doc.get("platform")
    if p is not None:
        if not isinstance(p, dict):
            raise ImageError(f"{what}: field 'platform': expected an object")
        features = p.get("os.features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ImageError(f"{what}: field 'platform.os.features': expected a list of strings")
        plat = Platform(_str(p, "os", what, False), _str(p, "architecture", what, False),
                        _str(p, "variant", what, False), tuple(features))
    return Descriptor(media_type, digest, size, _annotations(doc, what), plat,
                      _str(doc, "artifactType", what, False), doc)


def kind_of(data: bytes, media_type: str, what: str) -> tuple[str, dict[str, Any]]:
    """("manifest" | "index", parsed JSON); the media type from the body wins when the
    transport gave none."""
    doc = load_json(data, what)
    body_type = doc.get("mediaType")
    mt = media_type or (body_type if isinstance(body_type, str) else "")
    if not mt:  # OCI allows leaving mediaType out of the body: tell by the fields
        mt = media.OCI_INDEX if "manifests" in doc else media.OCI_MANIFEST
    if media_type and media_type not in media.MANIFESTS + media.INDEXES:
        raise ImageError(f"{what}: media type {shown(media_type)} is neither an image manifest nor an index")
    if isinstance(body_type, str) and media_type and body_type != media_type:
        raise ImageError(f"{what}: field 'mediaType': expected {media_type}, found {shown(body_type)}")
    if doc.get("schemaVersion") != 2:
        raise ImageError(f"{what}: field 'schemaVersion': expected 2, found {shown(doc.get('schemaVersion'))}")
    if mt in media.MANIFESTS:
        return "manifest", doc
    if mt in media.INDEXES:
        return "index", doc
    raise ImageError(f"{what}: media type {shown(mt)} is neither an image manifest nor an index")


def parse_manifest(data: bytes, media_type: str, what: str) -> Manifest:
    kind, doc = kind_of(data, media_type, what)
    if kind != "manifest":
        raise ImageError(f"{what}: expected an image manifest, found an index")
    mt = media_type or doc.get("mediaType") or media.OCI_MANIFEST
    config = descriptor(doc.get("config"), f"{what}: config")
    if config.media_type not in media.CONFIGS:
        raise ImageError(f"{what}: config: media type {shown(config.media_type)} is not an image config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ImageError(f"{what}: field 'layers': expected a list, found {type(layers_doc).__name__}")
    layers = [descriptor(d, f"{what}: layer {i}") for i, d in enumerate(layers_doc)]
    return Manifest(mt, digest_of(data), data, config, layers, _annotations(doc, what), doc)


def parse_index(data: bytes, media_type: str, what: str) -> Index:
    kind, doc = kind_of(data, media_type, what)
    if kind != "index":
        raise ImageError(f"{what}: expected an index, found an image manifest")
    mt = media_type or doc.get("mediaType") or media.OCI_INDEX
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ImageError(f"{what}: field 'manifests': expected a list")
    return Index(mt, digest_of(data), data,
                 [descriptor(d, f"{what}: manifests[{i}]") for i, d in enumerate(entries)], doc)


def parse_config(data: bytes, what: str) -> dict[str, Any]:
    doc = load_json(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageError(f"{what}: field 'rootfs': expected {{\"type\": \"layers\", \"diff_ids\": [...]}}")
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list) or not all(isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in ids):
        raise ImageError(f"{what}: field 'rootfs.diff_ids': expected a list of sha256 digests")
    for key in ("config", "history"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], (dict if key == "config" else list)):
            raise ImageError(f"{what}: field {key!r} has the wrong type")
    return doc


def diff_ids(config: dict[str, Any]) -> list[str]:
    return list(config["rootfs"]["diff_ids"])
