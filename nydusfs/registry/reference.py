"""`docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]` references (the registry's part of image
references; the image package dispatches on the transport prefix).

As docker and skopeo do, a first path component without `.` or `:` that is not `localhost` is
not a host: the image is on Docker Hub (`docker://alpine` = `docker.io/library/alpine:latest`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from nydusfs.registry.errors import ReferenceError_

PREFIX = "docker://"
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclasses.dataclass(frozen=True)
class Reference:
    host: str            # as written (host[:port]); docker.io for Docker Hub
    repo: str            # library/alpine
    tag: str | None
    digest: str | None   # sha256:... when pinned

    @property
    def endpoint(self) -> str:
        """host[:port] to connect to."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def ref(self) -> str:
        """What the manifests endpoint is asked for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def hostname(self) -> str:
        h = self.host
        if h.startswith("["):
            return h[1:h.index("]")]
        return h.rsplit(":", 1)[0] if ":" in h else h

    @property
    def is_loopback(self) -> bool:
        name = self.hostname
        if name == "localhost" or name.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        s = f"{PREFIX}{self.host}/{self.repo}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse_reference(text: str) -> Reference:
    """Parse a `docker://` reference; anything malformed is one clear error."""
    if not text.startswith(PREFIX):
        raise ReferenceError_(f"{text}: not a registry reference (expected {PREFIX}HOST/REPO[:TAG|@DIGEST])")
    rest = text[len(PREFIX):]
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise ReferenceError_(f"{text}: digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
    if tag is not None and not _TAG.fullmatch(tag):
        raise ReferenceError_(f"{text}: tag {tag!r} is not valid (letters, digits, _ . -, at most 128)")
    first, sep, path = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host = first
        if not _HOST.fullmatch(host):
            raise ReferenceError_(f"{text}: registry host {host!r} is not a host name or address with an optional port")
    else:
        host, path = DOCKER_HUB, rest
        if "/" not in path:
            path = "library/" + path
    if not path:
        raise ReferenceError_(f"{text}: no repository after the host")
    for comp in path.split("/"):
        if not _COMPONENT.fullmatch(comp):
            raise ReferenceError_(f"{text}: repository component {comp!r} is not valid "
                                  "(lowercase letters and digits, separated by . _ __ or -)")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(host, path, tag, digest)
