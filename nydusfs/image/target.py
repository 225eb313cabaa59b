"""Local image targets: an OCI image layout directory (blobs it already holds are shared) and
an oci-archive file. Everything is staged in a directory next to DST and only moved into place
by `commit`, so a failed or interrupted convert leaves DST as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import time
from typing import Any, BinaryIO

from . import media
from .manifest import MAX_MANIFEST, load_json
from .reference import DIGEST_RE, Reference
from .source import ImageError, ImageTarget

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class _Staged(ImageTarget):
    def __init__(self, reference: Reference) -> None:
        self.reference = str(reference)
        self.path = reference.path.rstrip("/") or reference.path
        self.tag = reference.ref
        if self.tag is not None and self.tag.startswith("sha256:"):
            raise ImageError(f"{self.reference}: a target is named by a tag, not a digest")
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise ImageError(f"{self.reference}: directory {parent} does not exist")
        name = os.path.basename(os.path.abspath(self.path))
        self.stage = os.path.join(parent, f".{name}.nydusfs-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.makedirs(os.path.join(self.stage, "blobs", "sha256"))
        except OSError as e:
            raise ImageError(f"{self.reference}: cannot create {self.stage}: {e.strerror}") from None
        self.entries: list[dict[str, Any]] = []
        self.done = False

    def _staged(self, digest: str) -> str:
        if not DIGEST_RE.fullmatch(digest):
            raise ImageError(f"{self.reference}: unsupported digest {digest!r}")
        return os.path.join(self.stage, "blobs", "sha256", digest[7:])

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self._staged(digest))

    def put_blob(self, digest: str, size: int, stream: BinaryIO) -> None:
        if self.has_blob(digest):
            return
        final = self._staged(digest)
        tmp = final + ".part"
        h = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as out:
            while chunk := stream.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
                out.write(chunk)
        got = "sha256:" + h.hexdigest()
        if got != digest or n != size:
            os.unlink(tmp)
            raise ImageError(f"{self.reference}: blob {digest}: written {n} bytes with digest {got}, "
                             f"expected {size} bytes")
        os.replace(tmp, final)

    def put_file(self, digest: str, path: str) -> None:
        """A blob held in a local file of known digest: linked when possible, else copied."""
        if self.has_blob(digest):
            return
        final = self._staged(digest)
        try:
            os.link(path, final)
        except OSError:
            shutil.copyfile(path, final + ".part")
            os.replace(final + ".part", final)

    def put_manifest(self, data: bytes, media_type: str) -> None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(self._staged(digest), "wb") as f:
            f.write(data)
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if self.tag is not None:
            entry["annotations"] = {media.ANN_REF_NAME: self.tag}
        self.entries = [entry]

    def _index(self, old: list[dict[str, Any]]) -> bytes:
        names = {e.get("annotations", {}).get(media.ANN_REF_NAME) for e in self.entries}
        names.discard(None)
        unnamed = {e["digest"] for e in self.entries if "annotations" not in e}

        def replaced(e: Any) -> bool:
            """Same tag, or (untagged) the same image again."""
            if not isinstance(e, dict):
                return False
            ann = e.get("annotations")
            ann = ann if isinstance(ann, dict) else {}
            return ann.get(media.ANN_REF_NAME) in names or (not ann.get(media.ANN_REF_NAME)
                                                             and e.get("digest") in unnamed)
        kept = [e for e in old if not replaced(e)]
        doc = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": kept + self.entries}
        return json.dumps(doc).encode()

    def close(self) -> None:
        if os.path.isdir(self.stage):
            shutil.rmtree(self.stage, ignore_errors=True)


class OCILayoutTarget(_Staged):
    def __init__(self, reference: Reference) -> None:
        if os.path.exists(reference.path) and not os.path.isdir(reference.path):
            raise ImageError(f"{reference}: {reference.path} exists and is not a directory")
        self.old: list[dict[str, Any]] | None = None
        if os.path.isdir(reference.path) and os.listdir(reference.path):
            _check_blob_dirs(reference)
            self.old = _existing_index(reference)
        self.present: set[str] = set()
        super().__init__(reference)

    def has_blob(self, digest: str) -> bool:
        """Staged, or held by the layout already: a plain file (not a symlink) whose content
        has the digest, so the image written never names a blob it does not hold."""
        if super().has_blob(digest) or digest in self.present:
            return True
        path = os.path.join(self.path, "blobs", "sha256", digest[7:])
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return False
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return False
        if "sha256:" + h.hexdigest() != digest:
            return False    # a damaged copy: the staged one replaces it at commit
        self.present.add(digest)
        return True

    def commit(self) -> None:
        if not self.entries:
            raise ImageError(f"{self.reference}: nothing to commit (no manifest written)")
        blobs = os.path.join(self.stage, "blobs", "sha256")
        with open(os.path.join(self.stage, "index.json"), "wb") as f:
            f.write(self._index(self.old or []))
        with open(os.path.join(self.stage, "oci-layout"), "wb") as f:
            f.write(LAYOUT)
        if not os.path.isdir(self.path) or self.old is None and not os.listdir(self.path):
            if os.path.isdir(self.path):
                os.rmdir(self.path)
            os.rename(self.stage, self.path)
            return
        _check_blob_dirs(Reference("oci", self.path, self.tag))   # again: it may have changed
        dest = os.path.join(self.path, "blobs", "sha256")
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(blobs)):  # blobs first: the index names them last
            target = os.path.join(dest, name)
            if "sha256:" + name in self.present:
                continue
            os.replace(os.path.join(blobs, name), target)
        if not os.path.exists(os.path.join(self.path, "oci-layout")):
            os.replace(os.path.join(self.stage, "oci-layout"), os.path.join(self.path, "oci-layout"))
        os.replace(os.path.join(self.stage, "index.json"), os.path.join(self.path, "index.json"))
        self.close()


def _check_blob_dirs(reference: Reference) -> None:
    """blobs/ and blobs/sha256/ of an existing layout, where commit moves blobs: directories
    of the layout itself, never symlinks that would lead the writes elsewhere."""
    for sub in ("blobs", os.path.join("blobs", "sha256")):
        try:
            mode = os.lstat(os.path.join(reference.path, sub)).st_mode
        except FileNotFoundError:
            return
        except OSError as e:
            raise ImageError(f"{reference}: {sub}: {e.strerror}") from None
        if not stat.S_ISDIR(mode):
            what = "a symlink" if stat.S_ISLNK(mode) else "not a directory"
            raise ImageError(f"{reference}: {sub} is {what}; the blobs of a layout written to "
                             "must be a directory of the layout")


def _existing_index(reference: Reference) -> list[dict[str, Any]]:
    path = os.path.join(reference.path, "index.json")
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(reference.path, "oci-layout")):
        raise ImageError(f"{reference}: {reference.path} is neither empty nor an OCI image layout "
                         "(index.json or oci-layout missing)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST + 1)
    except OSError as e:
        raise ImageError(f"{reference}: cannot read index.json: {e.strerror}") from None
    if len(data) > MAX_MANIFEST:
        raise ImageError(f"{reference}: index.json is more than the {MAX_MANIFEST} bytes allowed")
    doc = load_json(data, f"{reference}: index.json")
    if not isinstance(doc.get("manifests"), list):
        raise ImageError(f"{reference}: index.json: field 'manifests': expected a list")
    return list(doc["manifests"])


class OCIArchiveTarget(_Staged):
    """A new oci-archive (a plain tar of the layout), replacing FILE at commit."""

    def __init__(self, reference: Reference) -> None:
        if os.path.isdir(reference.path):
            raise ImageError(f"{reference}: {reference.path} is a directory")
        super().__init__(reference)

    def commit(self) -> None:
        if not self.entries:
            raise ImageError(f"{self.reference}: nothing to commit (no manifest written)")
        tmp = os.path.join(self.stage, "archive.tar")
        blobs = os.path.join(self.stage, "blobs", "sha256")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in (("oci-layout", LAYOUT), ("index.json", self._index([]))):
                _add_bytes(tf, name, data)
            _add_dir(tf, "blobs")
            _add_dir(tf, "blobs/sha256")
            for name in sorted(os.listdir(blobs)):
                ti = tarfile.TarInfo(f"blobs/sha256/{name}")
                ti.size = os.path.getsize(os.path.join(blobs, name))
                ti.mode = 0o644
                with open(os.path.join(blobs, name), "rb") as f:
                    tf.addfile(ti, f)
        os.replace(tmp, self.path)
        self.close()


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tf.addfile(ti, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    tf.addfile(ti)
