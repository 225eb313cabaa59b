"""Two images compared: paths added, removed and changed (with the fields), and for Nydus
images what an update costs a node that holds the old one.

The comparison is check's (every field, hard links included), so `diff` and `check` can never
disagree about what "equal" means. Content identity: two Nydus images are compared by chunk
digests (no blob is read); any other pair by blake3 of the bytes (Nydus blobs are read).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import os

from ..check.compare import Difference, Entry, Options, compare, flatten
from ..check.oracle import build, read_layer
from ..check.sides import Hashing, image_digest, walk_image
from ..reader import Image

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


@dataclasses.dataclass(slots=True)
class Side:
    name: str
    entries: dict[bytes, Entry]
    # Nydus only: per blob id, the compressed ranges (offset, size) the files' chunks point
    # at, each with its chunk digest; and the ids of every blob of the blob table
    chunks: dict[str, dict[tuple[int, int], bytes]] | None = None
    blobs: frozenset[str] = frozenset()
    # an image reference's bootstrap layer (digest, size): a mount fetches it whole
    bootstrap: tuple[str, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PathChange:
    path: bytes
    status: str                                   # added / removed / changed
    kind: str
    fields: tuple[str, ...] = ()                  # changed fields (xattr: "xattr:NAME")
    differences: tuple[Difference, ...] = ()


@dataclasses.dataclass(slots=True)
class BlobCost:
    blob: str
    chunks: int = 0
    bytes: int = 0                                # compressed bytes of its distinct chunk ranges
    present_bytes: int = 0                        # all of them when A has this blob, else 0
    same_digest_bytes: int = 0                    # fetched, though some chunk of A has the digest

    @property
    def fetch_bytes(self) -> int:
        return self.bytes - self.present_bytes


@dataclasses.dataclass(frozen=True, slots=True)
class BootstrapCost:
    layer: str                                    # B's bootstrap layer digest
    bytes: int
    present_bytes: int                            # all of it when A's is the same layer

    @property
    def fetch_bytes(self) -> int:
        return self.bytes - self.present_bytes


@dataclasses.dataclass(slots=True)
class DiffResult:
    a: str
    b: str
    changes: list[PathChange]
    cost: list[BlobCost] | None                   # per blob of B, Nydus pairs only
    bootstrap_cost: BootstrapCost | None = None   # B given as an image reference

    @property
    def equal(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        c = collections.Counter(ch.status for ch in self.changes)
        return {s: c.get(s, 0) for s in (ADDED, REMOVED, CHANGED)}


# --- sides ---------------------------------------------------------------------------------------

def oci_side(name: str, layers: list[str]) -> Side:
    """OCI layer tars (lowest first) applied with OCI rules, contents hashed with blake3."""
    return Side(name, flatten(build([read_layer(p, "blake3") for p in layers])))


def nydus_side(name: str, image: Image, content: str = "chunks", workers: int | None = None) -> Side:
    """A Nydus image through the reader. `content` "chunks" takes a file's identity from its
    chunk digests (metadata only); "blake3" hashes its bytes, read from the blobs."""
    entries, _problems = walk_image(image, None)  # compares; chunk records are not audited
    chunks: dict[str, dict[tuple[int, int], bytes]] = {}
    identity: dict[object, bytes] = {}
    inos: dict[bytes, int] = {}
    for path, ino in image.walk():
        e = entries[path]
        if e.kind != "file":
            continue
        inos[path] = ino
        if e.link in identity:
            continue
        h = hashlib.blake2b(int(e.size or 0).to_bytes(8, "little"), digest_size=32)
        for c in image.chunks(ino):
            h.update(c.block_id)
            ranges = chunks.setdefault(image.blob_of(c).blob_id, {})
            ranges[(c.compressed_offset, c.compressed_size)] = c.block_id
        identity[e.link] = b"chunks:" + h.digest()
    if content == "chunks":
        for e in entries.values():
            if e.kind == "file":
                e.digest = identity[e.link]
    else:
        with cf.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            hashing = Hashing(pool)
            for path, ino in inos.items():
                size = entries[path].size or 0
                hashing.submit(entries[path].link, functools.partial(image_digest, image, ino, size, "blake3"),
                               size)
            hashing.fill(entries)
    return Side(name, entries, chunks, frozenset(b.blob_id for b in image.blobs),
                _bootstrap_layer(image))


def _bootstrap_layer(image: Image) -> tuple[str, int] | None:
    """(digest, size) of the bootstrap layer of an image opened by reference (the reader keeps
    its source; the manifest is not fetched again); None for a bootstrap or layer file."""
    source = getattr(image, "source", None)
    if source is None:
        return None
    from ..image.nydus import find

    layer = find(source).bootstrap
    return layer.digest, layer.size


# --- the comparison -----------------------------------------------------------------------------

def diff(a: Side, b: Side, ignore: frozenset[str] = frozenset()) -> DiffResult:
    diffs = compare(a.entries, b.entries, Options(ignore=ignore, mtime_precision="ns"))
    by_path: dict[bytes, list[Difference]] = {}
    for d in diffs:
        by_path.setdefault(d.path, []).append(d)
    changes = []
    for path, ds in by_path.items():
        first = ds[0]
        if first.field == "missing":
            changes.append(PathChange(path, REMOVED, first.expected))
        elif first.field == "extra":
            changes.append(PathChange(path, ADDED, first.found))
        else:
            fields = tuple(dict.fromkeys(
                f"xattr:{os.fsdecode(d.xattr)}" if d.xattr is not None else d.field for d in ds))
            changes.append(PathChange(path, CHANGED, b.entries[path].kind, fields, tuple(ds)))
    if a.chunks is None or b.chunks is None:
        return DiffResult(a.name, b.name, changes, None)
    boot = None
    if b.bootstrap is not None:
        digest, size = b.bootstrap
        held = a.bootstrap is not None and a.bootstrap[0] == digest
        boot = BootstrapCost(digest, size, size if held else 0)
    return DiffResult(a.name, b.name, changes, update_cost(a, b), boot)


def update_cost(a: Side, b: Side) -> list[BlobCost]:
    """What a node holding A's blobs fetches for B's file data: per blob of B, the compressed
    chunk ranges B's files point at, held when A has that blob (by blob id, as the chunk
    cache keys blobs), fetched otherwise. A chunk is fetched from the blob B's bootstrap
    names even when A has one with the same digest in another blob (nydusd does the same);
    those bytes are also counted in `same_digest_bytes`."""
    assert a.chunks is not None and b.chunks is not None
    a_digests = {d for ranges in a.chunks.values() for d in ranges.values()}
    out = []
    for blob, ranges in sorted(b.chunks.items()):
        c = BlobCost(blob, len(ranges), sum(size for _, size in ranges))
        if blob in a.blobs:
            c.present_bytes = c.bytes
        else:
            c.same_digest_bytes = sum(size for (_, size), d in ranges.items() if d in a_digests)
        out.append(c)
    return out
