"""Image references in skopeo's transport syntax.

    oci:DIR[:REF]               an OCI image layout directory; REF is a ref.name or a digest
    oci-archive:FILE[:REF]      the same layout as a tar file
    docker-archive:FILE[:REF]   `docker save` output; REF is a repo:tag or @N (the N-th image)
    docker://HOST/REPO[:TAG|@DIGEST]   a registry (nydusfs.registry)

As in skopeo, the path ends at the first `:` after the transport, so a DIR or FILE cannot hold
one. A plain path (no known transport) is not a reference: the verbs that also take bootstrap
files treat it as a file.
"""

from __future__ import annotations

import dataclasses
import os
import re

from .source import ImageError

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# OCI image-spec annotations: ref.name; skopeo refuses anything outside this set too
REF_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]*")
DOCKER_INDEX_RE = re.compile(r"@(\d+)")


@dataclasses.dataclass(frozen=True)
class Reference:
    transport: str        # one of TRANSPORTS
    path: str             # DIR or FILE; for docker: HOST/REPO[:TAG|@DIGEST]
    ref: str | None       # the part after the path, or None

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref is not None else "")

    def absolute(self) -> Reference:
        """The same reference with its path made absolute (for a process that changes
        directory, such as the mount server)."""
        if self.transport == "docker":
            return self
        return dataclasses.replace(self, path=os.path.abspath(self.path))


def looks_like_reference(text: str) -> bool:
    """Whether `text` names a transport we know (a verb that takes files as well decides
    with this whether to read a reference or a file)."""
    if text.startswith("docker://"):
        return True
    head, sep, _ = text.partition(":")
    return bool(sep) and head in TRANSPORTS[:3]


def parse(text: str) -> Reference:
    """Parse a reference; every malformed one is an ImageError naming what is wrong."""
    if text.startswith("docker://"):
        rest = text[len("docker://"):]
        if not rest:
            raise ImageError(f"{text}: empty registry reference (expected docker://HOST/REPO[:TAG])")
        return Reference("docker", rest, None)
    head, sep, rest = text.partition(":")
    if not sep:
        raise ImageError(f"{text}: not an image reference (expected oci:DIR[:REF], "
                         "oci-archive:FILE[:REF], docker-archive:FILE[:REF] or docker://HOST/REPO[:TAG])")
    if head == "docker":
        raise ImageError(f"{text}: registry references are written docker://HOST/REPO[:TAG]")
    if head not in TRANSPORTS:
        raise ImageError(f"{text}: unknown transport {head!r} (expected oci, oci-archive, "
                         "docker-archive or docker)")
    path, sep, ref = rest.partition(":")
    if not path:
        raise ImageError(f"{text}: empty path after {head}:")
    if not sep:
        return Reference(head, path, None)
    if not ref:
        raise ImageError(f"{text}: empty reference after the path (leave out the ':' for the only image)")
    if head == "docker-archive":
        if not DOCKER_INDEX_RE.fullmatch(ref) and not REF_NAME_RE.fullmatch(ref):
            raise ImageError(f"{text}: invalid docker-archive reference {ref!r} (expected REPO:TAG or @N)")
    elif ref.startswith("sha256:"):
        if not DIGEST_RE.fullmatch(ref):
            raise ImageError(f"{text}: invalid digest {ref!r} (expected sha256: and 64 lowercase hex digits)")
    elif not REF_NAME_RE.fullmatch(ref):
        raise ImageError(f"{text}: invalid image reference name {ref!r} (letters, digits and ._:@/+- "
                         "only, starting with a letter or digit)")
    return Reference(head, path, ref)
