"""What every layer did, where every file comes from, and what space is wasted.

The layers are applied lowest first with the check oracle's OCI rules; the visible tree is
snapshotted before a layer, after its whiteouts and after its entries, and the snapshots are
compared. A node object stands for one version of a path (a hard link is the same object under
several names), so "which layer wrote this" is "which layer's changeset holds this object".
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, NamedTuple

from ..check.oracle import Changeset, Node, Parts, apply, new_root
from .layers import ChunkRef, LayerInput, fill_chunks

ADDED, MODIFIED, TYPE_CHANGED = "added", "modified", "type-changed"
DELETED, HIDDEN, REPLACED = "deleted", "hidden", "replaced"
MARKS = (ADDED, MODIFIED, TYPE_CHANGED, DELETED, HIDDEN, REPLACED)
WRITES = (ADDED, MODIFIED, TYPE_CHANGED)
MAX_HOPS = 255


class Seen(NamedTuple):
    """A path as one snapshot sees it (a tuple: there is one per path per snapshot)."""

    node: int                     # id() of the oracle node: one version of the path
    kind: str
    size: int
    attrs: tuple[object, ...]     # directories: attributes (a later layer may change them)
    target: bytes | None          # symlinks, to resolve whiteout paths


Snapshot = dict[bytes, Seen]


class Change(NamedTuple):
    path: bytes
    mark: str
    kind: str                     # the kind after the change (before it, for removals)
    size: int                     # regular files: bytes after (before, for removals)


@dataclasses.dataclass(slots=True)
class Waste:
    layer: int
    path: bytes                   # as the layer wrote it
    size: int
    reason: str                   # "overwritten in layer 3", "deleted in layer 2", ...


@dataclasses.dataclass(slots=True)
class LayerReport:
    index: int
    name: str
    created_by: str | None
    source_size: int | None
    nydus_size: int | None
    entries: int                  # entries and whiteouts the layer holds
    file_bytes: int = 0           # regular-file bytes the layer ships
    wasted_bytes: int = 0         # of those, bytes not visible in the final image
    changes: list[Change] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = collections.Counter(ch.mark for ch in self.changes)
        return {m: c.get(m, 0) for m in MARKS}


class Version(NamedTuple):
    layer: int
    mark: str
    kind: str
    size: int


@dataclasses.dataclass(slots=True)
class Dedup:
    """Bytes referenced against bytes stored once, by content (files) or by chunk digest."""

    total: int = 0
    unique: int = 0

    @property
    def ratio(self) -> float:
        return self.total / self.unique if self.unique else 1.0


@dataclasses.dataclass(slots=True)
class Analysis:
    """What `walk` finds (layers, marks, provenance, the final tree) and, once `figures` has
    run (`complete`), the waste and dedup figures."""

    layers: list[LayerReport]
    provenance: dict[bytes, list[Version]]       # every path any layer touched -> its history
    final: Snapshot
    root: Node
    waste: list[Waste] = dataclasses.field(default_factory=list)
    file_dedup_layers: list[Dedup] = dataclasses.field(default_factory=list)
    file_dedup: Dedup = dataclasses.field(default_factory=Dedup)
    chunk_dedup_layers: list[Dedup] | None = None    # Nydus layers only
    chunk_dedup: Dedup | None = None
    chunks: dict[int, tuple[ChunkRef, ...]] = dataclasses.field(default_factory=dict)  # id(visible node) ->
    complete: bool = False                           # set last, when the figures are in
    # what `figures` needs from the walk: (layer, path, node) of every file entry, and why
    # each file version that left the view left it
    shipped: list[tuple[int, bytes, Node]] = dataclasses.field(default_factory=list, repr=False)
    left: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def shipped_bytes(self) -> int:
        return sum(layer.file_bytes for layer in self.layers)

    @property
    def wasted_bytes(self) -> int:
        return sum(layer.wasted_bytes for layer in self.layers)

    @property
    def efficiency(self) -> float:
        """Share of the regular-file bytes the layers ship that the final image shows."""
        shipped = self.shipped_bytes
        return 1.0 - self.wasted_bytes / shipped if shipped else 1.0

    def writer(self, path: bytes) -> int | None:
        """The layer that wrote the visible version of `path` (None: not in the image, or a
        directory only implied by its children)."""
        if path not in self.final:
            return None
        for v in reversed(self.provenance.get(path, [])):
            if v.mark in WRITES:
                return v.layer
        return None


# --- snapshots ---------------------------------------------------------------------------------

def snapshot(root: Node) -> Snapshot:
    out: Snapshot = {}
    stack: list[tuple[bytes, Node]] = [(b"/", root)]
    while stack:
        path, node = stack.pop()
        attrs: tuple[object, ...] = ()
        if node.kind == "dir":
            xattrs = tuple(sorted(node.xattrs.items())) if node.xattrs else ()
            attrs = (node.mode, node.uid, node.gid, node.mtime_ns, xattrs)
        out[path] = Seen(id(node), node.kind, node.size, attrs, node.target)
        if node.children:
            base = b"" if path == b"/" else path
            stack.extend((base + b"/" + name, child) for name, child in node.children.items())
    return out


def _join(parts: Iterable[bytes]) -> bytes:
    return b"/" + b"/".join(parts)


def _resolve(snap: Snapshot, parts: Parts) -> bytes | None:
    """The path a directory path names in `snap`, symlinks followed inside the root (as the
    oracle joins whiteout paths)."""
    trail: list[bytes] = []
    todo = list(parts)
    hops = 0
    while todo:
        p = todo.pop(0)
        if p in (b"", b"."):
            continue
        if p == b"..":
            if trail:
                trail.pop()
            continue
        seen = snap.get(_join(trail + [p]))
        if seen is not None and seen.kind == "symlink" and seen.target:
            hops += 1
            if hops > MAX_HOPS:
                return None
            if seen.target.startswith(b"/"):
                trail = []
            todo = seen.target.split(b"/") + todo
            continue
        trail.append(p)
    return _join(trail)


def _parents(path: bytes) -> Iterable[bytes]:
    """`path` and each directory above it, nearest first (the root last)."""
    while True:
        yield path
        if path == b"/":
            return
        path = path.rsplit(b"/", 1)[0] or b"/"


# --- the walk ------------------------------------------------------------------------------------

def analyze(layers: list[LayerInput]) -> Analysis:
    """The walk and the figures."""
    a = walk(layers)
    figures(a, layers)
    return a


def walk(layers: list[LayerInput]) -> Analysis:
    """Apply the layers lowest first: per-layer changes, provenance, the final tree. What the
    browser needs before its tree is final; `figures` does the rest."""
    w = Walk()
    for layer in layers:
        w.add(layer)
    return w.analysis


class Walk:
    """The walk one layer at a time: `analysis` is, after each `add`, what the layers added so
    far make (the browser shows it while the next layers are read). Changes the analysis in
    place: whoever reads it does so from the thread that adds."""

    def __init__(self) -> None:
        root = new_root()
        self.analysis = Analysis([], {}, snapshot(root), root)

    def add(self, layer: LayerInput) -> LayerReport:
        a = self.analysis
        i = len(a.layers)
        root, before = a.root, a.final
        cs = layer.changeset
        report = LayerReport(i, layer.name, layer.created_by, layer.source_size, layer.nydus_size,
                             entries=len(cs.members) + len(cs.whiteouts))
        explicit, opaque = set(), set()
        for parent, target, _name, _off in cs.whiteouts:
            d = _resolve(before, parent)
            if d is None:
                continue
            if target is None:
                opaque.add(d)
            else:
                explicit.add((d if d != b"/" else b"") + b"/" + target)
        middle = before
        if cs.whiteouts:
            apply(root, Changeset(cs.source, whiteouts=cs.whiteouts))
            middle = snapshot(root)
        apply(root, Changeset(cs.source, members=cs.members))
        after = snapshot(root)

        for m in cs.members:
            if m.node is not None and m.node.kind == "file":
                report.file_bytes += m.node.size
                a.shipped.append((i, _join(m.path), m.node))

        changes = report.changes
        for path, now in after.items():
            was = before.get(path)
            if was is None:
                changes.append(Change(path, ADDED, now.kind, now.size))
            elif was.node != now.node:
                mark = MODIFIED if was.kind == now.kind else TYPE_CHANGED
                changes.append(Change(path, mark, now.kind, now.size))
            elif was.attrs != now.attrs:
                changes.append(Change(path, MODIFIED, now.kind, now.size))
        for path, was in before.items():
            if path in after:
                continue
            if path in middle:
                mark = REPLACED
            elif any(p in explicit for p in _parents(path)):
                mark = DELETED
            elif any(p in opaque for p in list(_parents(path))[1:]):
                mark = HIDDEN
            else:
                mark = DELETED
            changes.append(Change(path, mark, was.kind, was.size))
        changes.sort(key=lambda c: c.path)

        # a file version can leave the view only where the layer changed a path (an unchanged
        # path keeps its node); it has left if no path of the new view still shows it
        leaving = [(before[c.path].node, c.mark) for c in changes
                   if c.mark != ADDED and before[c.path].kind == "file"]
        if leaving:
            shown = {now.node for now in after.values()}
            for node, mark in leaving:
                if node not in shown and node not in a.left:
                    a.left[node] = f"{mark} in layer {i}"
        provenance = a.provenance
        for c in changes:
            got = provenance.get(c.path)
            if got is None:
                provenance[c.path] = [Version(i, c.mark, c.kind, c.size)]
            else:
                got.append(Version(i, c.mark, c.kind, c.size))
        a.layers.append(report)
        a.final = after
        return report


def figures(a: Analysis, layers: list[LayerInput]) -> None:
    """Wasted bytes (per layer and the largest files), dedup within and across layers, the
    chunks of visible files; fills `a` in and sets `a.complete` last, so that a reader in
    another thread sees either no figures or all of them."""
    for layer in layers:
        fill_chunks(layer)
    visible = {seen.node for seen in a.final.values()}
    waste: list[Waste] = []
    wasted = [0] * len(a.layers)
    for i, path, node in a.shipped:
        if id(node) in visible:
            continue
        reason = a.left.get(id(node), f"overwritten in layer {i}")
        waste.append(Waste(i, path, node.size, reason.replace(MODIFIED, "overwritten")))
        wasted[i] += node.size
    waste.sort(key=lambda w: (-w.size, w.layer, w.path))
    a.file_dedup_layers, a.file_dedup = _file_dedup(layers)
    a.chunk_dedup_layers, a.chunk_dedup = _chunk_dedup(layers)
    # visible nodes only: they live on in `root`, so their ids stay theirs
    a.chunks = {k: v for layer in layers for k, v in layer.chunks.items() if k in visible}
    a.waste = waste
    for report, n in zip(a.layers, wasted, strict=True):
        report.wasted_bytes = n
    a.shipped, a.left = [], {}
    a.complete = True


def _dedup(per_layer: list[Iterable[tuple[bytes, int]]]) -> tuple[list[Dedup], Dedup]:
    """Dedup within each layer and across all, from each layer's (content key, size) pairs."""
    per: list[Dedup] = []
    seen_all: set[bytes] = set()
    total = Dedup()
    for items in per_layer:
        d = Dedup()
        seen: set[bytes] = set()
        for key, size in items:
            d.total += size
            total.total += size
            if key not in seen:
                seen.add(key)
                d.unique += size
            if key not in seen_all:
                seen_all.add(key)
                total.unique += size
        per.append(d)
    return per, total


def _file_dedup(layers: list[LayerInput]) -> tuple[list[Dedup], Dedup]:
    return _dedup([[(m.node.digest, m.node.size) for m in layer.changeset.members
                    if m.node is not None and m.node.kind == "file" and m.node.digest is not None]
                   for layer in layers])


def _chunk_dedup(layers: list[LayerInput]) -> tuple[list[Dedup] | None, Dedup | None]:
    if not layers or not all(layer.nydus for layer in layers):
        return None, None
    return _dedup([[(r.digest, r.uncompressed) for refs in layer.chunks.values() for r in refs]
                   for layer in layers])
