"""Local image sources: an OCI image layout directory, the same layout inside a tar
(oci-archive) and `docker save` archives (docker-archive).

Archives are never extracted: their members are uncompressed tar members, so a blob is a byte
range of the archive file, read with os.pread at the member's offset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from typing import Any, BinaryIO

from . import media
from .manifest import MAX_CONFIG, MAX_MANIFEST, digest_of, load_json, parse_config, parse_json, shown
from .reference import DIGEST_RE, DOCKER_INDEX_RE, Reference
from .source import ImageError, ImageSource, RangeReader


class FileRange:
    """A byte range of a file as a RangeReader (a whole blob file, or an archive member)."""

    def __init__(self, path: str, offset: int, size: int, what: str) -> None:
        self.path, self.offset, self.size, self.what = path, offset, size, what
        try:  # O_NONBLOCK: a FIFO put in place of a checked file must not block the open
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"{what}: cannot open {path}: {e.strerror}") from None
        mode = os.fstat(self.fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(self.fd)
            self.fd = -1
            raise ImageError(f"{what}: {path} is {_kind(mode)}, not a regular file")

    def pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or size < 0:
            raise ImageError(f"{self.what}: read of {size} bytes at {offset} is outside the blob")
        size = max(0, min(size, self.size - offset))
        return os.pread(self.fd, size, self.offset + offset) if size else b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VerifiedStream(io.RawIOBase):
    """A blob read once from the start; at its end the bytes must have the expected digest."""

    def __init__(self, rng: FileRange, digest: str) -> None:
        self.rng, self.digest, self.pos = rng, digest, 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.rng.pread(min(len(b), 1 << 20), self.pos)
        n = len(data)
        b[:n] = data
        self.pos += n
        self.hash.update(data)
        if n == 0 and len(b):
            got = "sha256:" + self.hash.hexdigest()
            if self.pos != self.rng.size or got != self.digest:
                raise ImageError(f"{self.rng.what}: content does not match its digest: expected "
                                 f"{self.digest}, found {got}")
        return n

    def close(self) -> None:
        self.rng.close()
        super().close()


class _Blobs(ImageSource):
    """What the local sources share: blobs are ranges of local files, found by digest."""

    def __init__(self, reference: str) -> None:
        self.reference = reference

    def _locate(self, digest: str) -> tuple[str, int, int] | None:
        """(file, offset, size) of the blob, or None."""
        raise NotImplementedError

    def _range(self, digest: str) -> FileRange:
        if not DIGEST_RE.fullmatch(digest):
            raise ImageError(f"{self.reference}: unsupported digest {digest!r} (expected sha256:<64 hex>)")
        where = self._locate(digest)
        if where is None:
            raise ImageError(f"{self.reference}: blob {digest} is missing")
        return FileRange(where[0], where[1], where[2], f"{self.reference}: blob {digest}")

    def read_blob(self, digest: str, limit: int) -> bytes:
        rng = self._range(digest)
        try:
            if rng.size > limit:
                raise ImageError(f"{rng.what}: {rng.size} bytes, more than the {limit} allowed here")
            data = rng.pread(rng.size, 0)
        finally:
            rng.close()
        got = digest_of(data)
        if got != digest:
            raise ImageError(f"{rng.what}: content does not match its digest (found {got})")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        return io.BufferedReader(VerifiedStream(self._range(digest), digest), 1 << 20)

    def range_reader(self, digest: str) -> RangeReader:
        return self._range(digest)

    def has_blob(self, digest: str) -> bool:
        return DIGEST_RE.fullmatch(digest) is not None and self._locate(digest) is not None

    def stored_size(self, digest: str) -> int | None:
        where = self._locate(digest) if DIGEST_RE.fullmatch(digest) else None
        return where[2] if where else None


class _Layout(_Blobs):
    """An OCI image layout, read through `_member(path)`; the reference's REF picks the entry
    of index.json."""

    def __init__(self, reference: Reference) -> None:
        super().__init__(str(reference))
        self.ref = reference.ref

    def _member(self, name: str) -> tuple[str, int, int] | None:
        raise NotImplementedError

    def _read_member(self, name: str, limit: int) -> bytes:
        where = self._member(name)
        if where is None:
            raise ImageError(f"{self.reference}: not an OCI image layout: {name} is missing")
        path, offset, size = where
        if size > limit:
            raise ImageError(f"{self.reference}: {name} is {size} bytes, more than the {limit} allowed")
        rng = FileRange(path, offset, size, f"{self.reference}: {name}")
        try:
            return rng.pread(size, 0)
        finally:
            rng.close()

    def _locate(self, digest: str) -> tuple[str, int, int] | None:
        return self._member("blobs/sha256/" + digest.split(":", 1)[1])

    def index(self) -> dict[str, Any]:
        layout = load_json(self._read_member("oci-layout", 4096), f"{self.reference}: oci-layout")
        if not isinstance(layout.get("imageLayoutVersion"), str):
            raise ImageError(f"{self.reference}: oci-layout: field 'imageLayoutVersion' is missing")
        doc = load_json(self._read_member("index.json", MAX_MANIFEST), f"{self.reference}: index.json")
        if not isinstance(doc.get("manifests"), list):
            raise ImageError(f"{self.reference}: index.json: field 'manifests': expected a list")
        return doc

    def index_or_manifest(self) -> tuple[bytes, str]:
        from .manifest import descriptor

        doc = self.index()
        entries = [descriptor(d, f"{self.reference}: index.json manifests[{i}]")
                   for i, d in enumerate(doc["manifests"])]
        if self.ref is None:
            if len(entries) != 1:
                names = sorted({e.annotations.get(media.ANN_REF_NAME, e.digest) for e in entries})
                raise ImageError(f"{self.reference}: the layout holds {len(entries)} images; name one "
                                 f"as {self.reference}:REF (one of: {', '.join(names)[:200] or 'none'})")
            chosen = entries[0]
        elif self.ref.startswith("sha256:"):
            found = [e for e in entries if e.digest == self.ref]
            if not found:
                raise ImageError(f"{self.reference}: no image with digest {self.ref} in index.json")
            chosen = found[0]
        else:
            found = [e for e in entries if e.annotations.get(media.ANN_REF_NAME) == self.ref]
            if not found:
                raise ImageError(f"{self.reference}: no image named {self.ref!r} in index.json")
            if len({e.digest for e in found}) > 1:
                raise ImageError(f"{self.reference}: {len(found)} different images are named {self.ref!r}")
            chosen = found[0]
        data = self.read_blob(chosen.digest, MAX_MANIFEST)
        if len(data) != chosen.size:
            raise ImageError(f"{self.reference}: index.json: entry {chosen.digest}: field 'size' says "
                             f"{chosen.size} bytes, the manifest has {len(data)}")
        return data, chosen.media_type


class OCILayoutSource(_Layout):
    def __init__(self, reference: Reference) -> None:
        super().__init__(reference)
        self.dir = reference.path
        if not os.path.isdir(self.dir):
            what = "does not exist" if not os.path.exists(self.dir) else "is not a directory"
            raise ImageError(f"{self.reference}: {self.dir} {what}")
        self.root = os.path.realpath(self.dir)
        self.verified: set[str] = set()

    def blob_path(self, digest: str) -> str | None:
        """The file holding a blob (a layout's blobs are plain files), its content checked
        against the digest first: who reads the file by path reads verified bytes."""
        where = self._locate(digest) if DIGEST_RE.fullmatch(digest) else None
        if where is None:
            return None
        if digest not in self.verified:
            with self.open_blob(digest) as f:
                while f.read(1 << 20):
                    pass
            self.verified.add(digest)
        return where[0]

    def _member(self, name: str) -> tuple[str, int, int] | None:
        """(path, 0, size) of a file of the layout; None when it does not exist. A symlink
        leading out of the layout, and anything but a regular file, is an error."""
        path = os.path.join(self.dir, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ImageError(f"{self.reference}: {name}: {e.strerror}") from None
        real = os.path.realpath(path)
        if os.path.commonpath([self.root, real]) != self.root:
            raise ImageError(f"{self.reference}: {name} is a symlink leading out of the layout "
                             f"(to {real})")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{self.reference}: {name} is {_kind(st.st_mode)}, not a regular file")
        return path, 0, st.st_size


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "of another kind"


def scan_tar(path: str, what: str, others: dict[str, str] | None = None) -> dict[str, tuple[int, int]]:
    """Regular members of an uncompressed tar: normalised name -> (data offset, size). The
    names of other members go to `others` with their kind, so a message can say what is
    there. A later member of the same name replaces an earlier one, as on extraction."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; open errors named here
    except OSError as e:
        raise ImageError(f"{what}: cannot open {path}: {e.strerror}") from None
    with f:
        head = f.read(4)
        if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
            raise ImageError(f"{what}: {path} is compressed; an archive must be a plain tar")
        f.seek(0)
        members: dict[str, tuple[int, int]] = {}
        links: dict[str, str] = {}
        size = os.fstat(f.fileno()).st_size
        try:
            with tarfile.open(fileobj=f, mode="r:") as tf:
                for m in tf:
                    key = os.path.normpath(m.name).lstrip("/")
                    links.pop(key, None)
                    if m.isreg():
                        if m.offset_data + m.size > size:
                            raise ImageError(f"{what}: member {shown(m.name)} at offset {m.offset} runs "
                                             f"past the end of the {size}-byte archive")
                        members[key] = (m.offset_data, m.size)
                        if others is not None:
                            others.pop(key, None)
                        continue
                    members.pop(key, None)
                    if m.issym() or m.islnk():
                        links[key] = _link_target(key, m.linkname, m.issym())
                    if others is not None:
                        others[key] = "a symlink" if m.issym() else "a hard link" if m.islnk() else \
                            "a directory" if m.isdir() else "not a regular file"
        except (tarfile.TarError, EOFError) as e:
            raise ImageError(f"{what}: {path} is not a readable tar archive ({e})") from None
    _follow_links(members, links, others)
    return members


MAX_LINK_HOPS = 16


def _link_target(key: str, linkname: str, symbolic: bool) -> str:
    """The archive member a link names: a symlink's target is relative to its own directory, a
    hard link's to the archive's root. "" when it leads out of the archive (absolute or ..)."""
    if symbolic and linkname.startswith("/"):
        return ""
    target = os.path.normpath(os.path.join(os.path.dirname(key), linkname) if symbolic
                              else linkname.lstrip("/"))
    return "" if target == ".." or target.startswith("../") else target


def _follow_links(members: dict[str, tuple[int, int]], links: dict[str, str],
                  others: dict[str, str] | None) -> None:
    """Links to regular members of the same archive read as their target, as skopeo reads them
    (`docker save` stores a layer shared by two images once and links the second name to it)."""
    for key, target in links.items():
        hops = 0
        while target in links and hops < MAX_LINK_HOPS:
            target, hops = links[target], hops + 1
        if target and target in members:
            members[key] = members[target]
            if others is not None:
                others.pop(key, None)
        elif others is not None:
            kind = others.get(key, "a link")
            others[key] = (f"{kind} leading out of the archive" if not target
                           else f"{kind} to {shown(target)}, which is not a regular member")


class OCIArchiveSource(_Layout):
    def __init__(self, reference: Reference) -> None:
        super().__init__(reference)
        self.path = reference.path
        if not os.path.isfile(self.path):
            what = "does not exist" if not os.path.exists(self.path) else "is not a file"
            raise ImageError(f"{self.reference}: {self.path} {what}")
        self.others: dict[str, str] = {}
        self.members = scan_tar(self.path, self.reference, self.others)

    def _member(self, name: str) -> tuple[str, int, int] | None:
        m = self.members.get(name)
        if m is None and name in self.others:
            raise ImageError(f"{self.reference}: member {name} is {self.others[name]}, not a regular file")
        return (self.path, m[0], m[1]) if m else None


class DockerArchiveSource(_Blobs):
    """`docker save` output: manifest.json lists images by config and layer member paths. The
    image is presented as the Docker schema 2 manifest a registry would serve (as skopeo does)."""

    def __init__(self, reference: Reference) -> None:
        super().__init__(str(reference))
        self.path = reference.path
        if not os.path.isfile(self.path):
            what = "does not exist" if not os.path.exists(self.path) else "is not a file"
            raise ImageError(f"{self.reference}: {self.path} {what}")
        self.others: dict[str, str] = {}
        self.members = scan_tar(self.path, self.reference, self.others)
        self.by_digest: dict[str, str] = {}
        self._manifest = self._synthesize(reference.ref)

    def _read(self, name: str, limit: int) -> bytes:
        key = os.path.normpath(name).lstrip("/")
        m = self.members.get(key)
        if m is None and key in self.others:
            raise ImageError(f"{self.reference}: member {shown(name)} is {self.others[key]}, not a regular file")
        if m is None:
            raise ImageError(f"{self.reference}: member {shown(name)} is missing from the archive")
        if m[1] > limit:
            raise ImageError(f"{self.reference}: member {shown(name)} is {m[1]} bytes, more than the {limit} allowed")
        rng = FileRange(self.path, m[0], m[1], f"{self.reference}: {name}")
        try:
            return rng.pread(m[1], 0)
        finally:
            rng.close()

    def _synthesize(self, ref: str | None) -> bytes:
        doc: Any = None
        if "manifest.json" in self.members:
            doc = parse_json(self._read("manifest.json", MAX_MANIFEST), f"{self.reference}: manifest.json")
        if not isinstance(doc, list) or not doc:
            raise ImageError(f"{self.reference}: not a docker-archive: manifest.json is missing or "
                             "not a non-empty list")
        if ref is None:
            if len(doc) != 1:
                raise ImageError(f"{self.reference}: the archive holds {len(doc)} images; name one as "
                                 f"{self.reference}:REPO:TAG or :@N")
            entry = doc[0]
        elif DOCKER_INDEX_RE.fullmatch(ref):
            n = int(ref[1:])
            if n >= len(doc):
                raise ImageError(f"{self.reference}: image @{n} does not exist (the archive holds {len(doc)})")
            entry = doc[n]
        else:
            wanted = {ref, ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"}
            found = [e for e in doc if isinstance(e, dict) and wanted & _tags(e)]
            if not found:
                raise ImageError(f"{self.reference}: no image tagged {ref!r} in manifest.json")
            entry = found[0]
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ImageError(f"{self.reference}: manifest.json: an entry lacks 'Config' or 'Layers'")
        config = self._read(entry["Config"], MAX_CONFIG)
        ids = parse_config(config, f"{self.reference}: {entry['Config']}")["rootfs"]["diff_ids"]
        if len(ids) != len(entry["Layers"]):
            raise ImageError(f"{self.reference}: manifest.json lists {len(entry['Layers'])} layers, the "
                             f"config's rootfs.diff_ids {len(ids)}")
        config_digest = digest_of(config)
        self.by_digest[config_digest] = entry["Config"]
        layers = []
        for i, name in enumerate(entry["Layers"]):
            if not isinstance(name, str):
                raise ImageError(f"{self.reference}: manifest.json: layer {i} is not a member name")
            key = os.path.normpath(name).lstrip("/")
            if key not in self.members:
                there = f"is {self.others[key]}, not a regular file" if key in self.others else \
                    "is missing from the archive"
                raise ImageError(f"{self.reference}: layer {i}: member {shown(name)} {there}")
            off, size = self.members[key]
            rng = FileRange(self.path, off, size, f"{self.reference}: {name}")
            try:
                head = rng.pread(4, 0)
            finally:
                rng.close()
            if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
                digest = self._hash(key)
                mt = media.DOCKER_LAYER_GZIP
            else:  # an uncompressed layer is its own diff_id (checked whenever it is read)
                digest, mt = ids[i], media.DOCKER_LAYER
            self.by_digest[digest] = key
            layers.append({"mediaType": mt, "size": size, "digest": digest})
        manifest = {"schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST,
                    "config": {"mediaType": media.DOCKER_CONFIG, "size": len(config),
                               "digest": config_digest},
                    "layers": layers}
        return json.dumps(manifest, indent=3).encode()

    def _hash(self, key: str) -> str:
        off, size = self.members[key]
        rng = FileRange(self.path, off, size, f"{self.reference}: {key}")
        h = hashlib.sha256()
        try:
            pos = 0
            while pos < size:
                data = rng.pread(1 << 20, pos)
                h.update(data)
                pos += len(data)
        finally:
            rng.close()
        return "sha256:" + h.hexdigest()

    def _locate(self, digest: str) -> tuple[str, int, int] | None:
        key = self.by_digest.get(digest)
        if key is None:
            return None
        off, size = self.members[key]
        return self.path, off, size

    def index_or_manifest(self) -> tuple[bytes, str]:
        return self._manifest, media.DOCKER_MANIFEST


def _short(tag: str) -> str:
    """docker.io/library/x:t -> x:t, as users write it."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag


def _tags(entry: dict[str, Any]) -> set[str]:
    listed = entry.get("RepoTags")
    tags = {t for t in listed if isinstance(t, str)} if isinstance(listed, list) else set()
    return tags | {_short(t) for t in tags}
