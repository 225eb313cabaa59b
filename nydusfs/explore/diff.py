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
    # Nydus only: chunk digest -> (compressed size, blob id) of every chunk a file uses
    chunks: dict[bytes, tuple[int, str]] | None = None


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
    bytes: int = 0                                # compressed bytes of its distinct chunks
    present_bytes: int = 0                        # already in A (same chunk digest)

    @property
    def fetch_bytes(self) -> int:
        return self.bytes - self.present_bytes


@dataclasses.dataclass(slots=True)
class DiffResult:
    a: str
    b: str
    changes: list[PathChange]
    cost: list[BlobCost] | None                   # per blob of B, Nydus pairs only

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
    chunks: dict[bytes, tuple[int, str]] = {}
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
            chunks.setdefault(c.block_id, (c.compressed_size, image.blob_of(c).blob_id))
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
    return Side(name, entries, chunks)


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
    cost = update_cost(a, b) if a.chunks is not None and b.chunks is not None else None
    return DiffResult(a.name, b.name, changes, cost)


def update_cost(a: Side, b: Side) -> list[BlobCost]:
    """What a node holding A fetches for B: B's distinct chunks by blob, less those whose digest
    A's chunks already have (chunks are fetched whole, compressed)."""
    assert a.chunks is not None and b.chunks is not None
    per: dict[str, BlobCost] = {}
    for digest, (size, blob) in b.chunks.items():
        c = per.setdefault(blob, BlobCost(blob))
        c.chunks += 1
        c.bytes += size
        if digest in a.chunks:
            c.present_bytes += size
    return sorted(per.values(), key=lambda c: c.blob)
