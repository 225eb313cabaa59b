"""explore's analysis: change marks, provenance, waste and dedup.

Marks and provenance are checked on every merge test stack against the tests' own dict
reference (tests/stacks.py `Reference`, which shares no code with nydusfs), applied layer by
layer in three steps (explicit whiteouts, opaque markers, entries) and compared snapshot to
snapshot; OCI tars and Nydus layer files (v5, v6) of the same stack must give the same answer.
Waste and dedup are checked on images whose figures are known by construction.
"""

from __future__ import annotations

import pathlib

import pytest
from corpus import Layer, pattern
from stacks import OPQ, STACKS, WH, Reference, Refused, build_layers

from nydusfs.errors import NydusfsError
from nydusfs.explore.analysis import (ADDED, DELETED, HIDDEN, MODIFIED, REPLACED, TYPE_CHANGED,
                                      WRITES, analyze)
from nydusfs.explore.layers import from_nydus_layer, from_oci_tar


def _key(parts: tuple[bytes, ...]) -> bytes:
    return b"/" + b"/".join(parts)


def _snap(ref: Reference) -> dict[bytes, tuple[object, ...]]:
    out = {}
    for key, n in ref.fs.items():
        attrs = (n.mode, n.uid, n.gid, n.mtime, tuple(sorted(n.xattrs.items()))) if n.kind == "dir" else ()
        out[_key(key)] = (id(n), n.kind, attrs)
    return out


def _only(layer: Layer, keep) -> Layer:  # type: ignore[no-untyped-def]
    out = Layer()
    out.entries = [(ti, data) for ti, data in layer.entries if keep(ti.name.encode("utf-8", "surrogateescape"))]
    return out


def _base(name: bytes) -> bytes:
    return name.rstrip(b"/").rsplit(b"/", 1)[-1]


def reference_marks(layers: list[Layer]) -> list[dict[bytes, str]]:
    """Per layer: path -> mark, from the dict reference."""
    ref = Reference()
    out = []
    for i, layer in enumerate(layers):
        before = _snap(ref)
        explicit = _only(layer, lambda n: _base(n).startswith(WH) and _base(n) != OPQ)
        opaque = _only(layer, lambda n: _base(n) == OPQ)
        entries = _only(layer, lambda n: not _base(n).startswith(WH))
        ref.apply(explicit, lowest=i == 0)
        after_explicit = _snap(ref)
        ref.apply(opaque, lowest=i == 0)
        after_opaque = _snap(ref)
        ref.apply(entries, lowest=i == 0)
        after = _snap(ref)
        marks = {}
        for p, now in after.items():
            was = before.get(p)
            if was is None:
                marks[p] = ADDED
            elif was[0] != now[0]:
                marks[p] = MODIFIED if was[1] == now[1] else TYPE_CHANGED
            elif was[2] != now[2]:
                marks[p] = MODIFIED
        for p in before.keys() - after.keys():
            if p not in after_explicit:
                marks[p] = DELETED
            elif p not in after_opaque:
                marks[p] = HIDDEN
            else:
                marks[p] = REPLACED
        out.append(marks)
    return out


def _marks(analysis) -> list[dict[bytes, str]]:  # type: ignore[no-untyped-def]
    return [{c.path: c.mark for c in r.changes} for r in analysis.layers]


def _tars(layers: list[Layer], tmp: pathlib.Path) -> list[str]:
    return [str(layer.write(tmp / f"layer{i}.tar")) for i, layer in enumerate(layers)]


@pytest.mark.parametrize("name", sorted(STACKS))
def test_marks_and_provenance_match_the_reference(name: str, tmp_path: pathlib.Path) -> None:
    stack = STACKS[name]()
    try:
        want = reference_marks(stack.layers)
    except Refused:
        with pytest.raises(NydusfsError):
            analyze([from_oci_tar(p) for p in _tars(stack.layers, tmp_path)])
        return
    oci = analyze([from_oci_tar(p) for p in _tars(stack.layers, tmp_path)])
    assert _marks(oci) == want
    # provenance: the last layer that wrote each visible path, from the reference marks
    for path in oci.final:
        writers = [i for i, marks in enumerate(want) if marks.get(path) in WRITES]
        assert oci.writer(path) == (writers[-1] if writers else None), path
        history = [(v.layer, v.mark) for v in oci.provenance.get(path, [])]
        assert history == [(i, m[path]) for i, m in enumerate(want) if path in m]
    for version in (5, 6):
        files = build_layers(stack.layers, tmp_path / f"v{version}", version=version, layout="B")
        nydus = analyze([from_nydus_layer(str(f)) for f in files])
        assert _marks(nydus) == want, f"RAFS v{version}"


def test_wasted_bytes_and_efficiency_known_by_construction(tmp_path: pathlib.Path) -> None:
    big, mid, small = pattern(300_000, 1), pattern(70_000, 2), pattern(5_000, 3)
    layers = [
        Layer().dir("app").file("app/big", big).file("app/mid", mid).file("app/keep", small),
        Layer().file("app/big", pattern(1_000, 4)).whiteout("app/mid"),   # overwrite + delete
        Layer().opaque("app").file("app/new", small),                      # hides big' and keep
    ]
    a = analyze([from_oci_tar(p) for p in _tars(layers, tmp_path)])
    shipped = 300_000 + 70_000 + 5_000 + 1_000 + 5_000
    wasted = 300_000 + 70_000 + 5_000 + 1_000
    assert a.shipped_bytes == shipped
    assert a.wasted_bytes == wasted
    assert [r.wasted_bytes for r in a.layers] == [375_000, 1_000, 0]
    assert a.efficiency == pytest.approx(1 - wasted / shipped)
    reasons = {(w.layer, w.path): w.reason for w in a.waste}
    assert reasons == {(0, b"/app/big"): "overwritten in layer 1", (0, b"/app/mid"): "deleted in layer 1",
                       (0, b"/app/keep"): "hidden in layer 2", (1, b"/app/big"): "hidden in layer 2"}
    assert [w.size for w in a.waste] == sorted((w.size for w in a.waste), reverse=True)


def test_hard_links_and_same_layer_duplicates(tmp_path: pathlib.Path) -> None:
    data = pattern(4_000, 5)
    layers = [Layer().file("a", data).hardlink("b", "a"),
              Layer().whiteout("a").file("dup", b"first").file("dup", b"second!")]
    a = analyze([from_oci_tar(p) for p in _tars(layers, tmp_path)])
    # /a is deleted but its inode lives on as /b: nothing of layer 0 is wasted;
    # the first /dup of layer 1 never shows
    assert a.wasted_bytes == len(b"first")
    assert [(w.layer, w.path) for w in a.waste] == [(1, b"/dup")]


def test_dedup_by_content_and_by_chunk(tmp_path: pathlib.Path) -> None:
    one, two = pattern(8192, 6), pattern(8192, 7)
    layers = [Layer().file("x", one).file("y", one).file("z", two),   # y repeats x
              Layer().file("w", one + two)]                           # same chunks, other file
    a = analyze([from_oci_tar(p) for p in _tars(layers, tmp_path)])
    assert (a.file_dedup_layers[0].total, a.file_dedup_layers[0].unique) == (3 * 8192, 2 * 8192)
    assert (a.file_dedup.total, a.file_dedup.unique) == (5 * 8192, 4 * 8192)
    assert a.chunk_dedup is None
    files = build_layers(layers, tmp_path / "n", version=6, layout="B")  # 4 KiB chunks
    n = analyze([from_nydus_layer(str(f)) for f in files])
    assert n.chunk_dedup_layers is not None and n.chunk_dedup is not None
    assert (n.chunk_dedup_layers[0].total, n.chunk_dedup_layers[0].unique) == (3 * 8192, 2 * 8192)
    assert (n.chunk_dedup_layers[1].total, n.chunk_dedup_layers[1].unique) == (2 * 8192, 2 * 8192)
    assert (n.chunk_dedup.total, n.chunk_dedup.unique) == (5 * 8192, 2 * 8192)
    assert n.chunk_dedup.ratio == pytest.approx(2.5)


def test_walk_then_figures_is_the_whole_analysis(tmp_path: pathlib.Path) -> None:
    """The browser's first screen comes from `walk`; `figures` fills in the rest later: the two
    steps give exactly what `analyze` gives, and before `figures` nothing claims to be known."""
    from nydusfs.explore.analysis import figures, walk
    from nydusfs.explore.report import analysis_doc

    layers = STACKS["three_layers"]().layers
    tars = _tars(layers, tmp_path)
    whole = analysis_doc(analyze([from_oci_tar(p) for p in tars]))
    inputs = [from_oci_tar(p) for p in tars]
    a = walk(inputs)
    assert not a.complete and a.waste == [] and all(r.wasted_bytes == 0 for r in a.layers)
    figures(a, inputs)
    assert a.complete
    assert analysis_doc(a) == whole
    # Nydus layers read without their chunk lists: `figures` reads them, the same figures come
    files = build_layers(layers, tmp_path / "n", version=6, layout="B")
    whole = analysis_doc(analyze([from_nydus_layer(str(f)) for f in files]))
    inputs = [from_nydus_layer(str(f), chunks=False) for f in files]
    assert all(not i.chunks and i.unread for i in inputs if i.changeset.members)
    a = walk(inputs)
    figures(a, inputs)
    assert analysis_doc(a) == whole and whole["summary"]["chunk_dedup"] is not None


def _naive_sizes(root) -> dict[bytes, int]:  # type: ignore[no-untyped-def]
    """Each directory's file bytes by a walk of its subtree, a linked file once per directory."""
    out = {}
    stack = [(b"/", root)]
    while stack:
        path, d = stack.pop()
        seen, total, below = set(), 0, [d]
        while below:
            n = below.pop()
            for child in (n.children or {}).values():
                if child.kind == "file" and id(child) not in seen:
                    seen.add(id(child))
                    total += child.size
                below.append(child)
        out[path] = total
        stack.extend(((path if path != b"/" else b"") + b"/" + name, c)
                     for name, c in (d.children or {}).items() if c.kind == "dir")
    return out


def test_browser_index_sizes_links_and_chunk_users(tmp_path: pathlib.Path) -> None:
    from nydusfs.explore.browse import MERGED, Browser, build_index

    data = pattern(8192, 8)
    layers = [Layer().dir("a").dir("a/b").file("a/b/f", data).hardlink("a/g", "a/b/f")
              .hardlink("a/b/h", "a/b/f").file("a/b/other", data[:4096]).file("top", b"xyz"),
              Layer().dir("c").file("c/k", data)]
    files = build_layers(layers, tmp_path, version=6, layout="B")  # 4 KiB chunks
    a = analyze([from_nydus_layer(str(f)) for f in files])
    index = build_index(a)
    assert index.sizes == _naive_sizes(a.root)
    assert index.sizes[b"/a"] == 8192 + 4096 and index.sizes[b"/"] == 2 * 8192 + 4096 + 3
    assert sorted(map(sorted, index.links.values())) == [[b"/a/b/f", b"/a/b/h", b"/a/g"]]
    users = index.chunk_users
    first = a.chunks[a.final[b"/a/b/other"].node][0].digest       # data's first chunk
    assert sorted(users[first]) == [b"/a/b/f", b"/a/b/h", b"/a/b/other", b"/a/g", b"/c/k"]
    assert index.paths == sorted(a.final)
    b = Browser(a)
    # before the index: directory sizes are unknown, never guessed; files have theirs
    assert {i.path: i.size for i in b.children(MERGED, b"/a")} == {b"/a/b": None, b"/a/g": 8192}
    assert ("pending", "hard links, shared chunks, sizes and waste are being computed") in b.details(b"/a/g")
    b.prepare()
    assert {i.path: i.size for i in b.children(MERGED, b"/a")} == {b"/a/b": 8192 + 4096, b"/a/g": 8192}
    details = dict(b.details(b"/a/g"))
    assert details["hard links"] == "/a/b/f, /a/b/h"
    assert details["shares chunks with"] == "/a/b/f, /a/b/h, /a/b/other, /c/k"
    assert "pending" not in details
