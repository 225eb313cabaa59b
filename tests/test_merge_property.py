"""Property: for random stacks of 2-5 small layers, the merged image equals the simple
reference field by field (type, mode, owner, size, content, symlink, rdev, nlink, hard-link
groups, mtime, xattrs).

Generated layers stay inside what OCI pins down: a layer names each path once (except a
directory it replaces later by a file or symlink), puts nothing below its own non-directories
and puts a directory entry before what it holds; symlinks point
outside the generated names (paths below them land where they point); hard links point at
earlier files of the layer or at any path (a lower file, or nothing: then both sides must
refuse). Tar order is otherwise random (markers before or after the entries beside them).
"""

from __future__ import annotations

import os
import pathlib
import tarfile
import tempfile

import pytest
from corpus import Layer
from hypothesis import given, settings
from hypothesis import strategies as st
from stacks import CHUNK, Refused, build_layers, differences, reference, snapshot_image

from nydusfs.check import oracle as check_reference
from nydusfs.errors import LayerError, MergeError
from nydusfs.merge import merge
from nydusfs.util.output import write_outputs

NAMES = [b"a", b"b\xff"]   # few names: layers keep hitting each other's paths
path = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)
mtime = st.one_of(st.integers(0, 2**32 - 1),
                  st.tuples(st.integers(1, 2**31), st.integers(1, 999_999_999)).map(lambda t: f"{t[0]}.{t[1]:09d}"))
meta = st.fixed_dictionaries({
    "mode": st.sampled_from([0o755, 0o700, 0o644, 0o4755, 0o1777, 0o600]),
    "uid": st.sampled_from([0, 1000, (1 << 21) + 1]),
    "gid": st.sampled_from([0, 50]),
    "mtime": mtime,
    "xattrs": st.dictionaries(st.sampled_from([b"user.a", "user.é".encode()]), st.binary(max_size=6), max_size=2),
})
data = st.one_of(st.binary(max_size=40), st.integers(0, 3 * CHUNK + 7).map(lambda n: bytes([n % 251]) * n))

op = st.one_of(
    st.tuples(st.just("dir"), path, meta),
    st.tuples(st.just("file"), path, meta, data),
    st.tuples(st.just("symlink"), path, st.sampled_from([b"nowhere", b"/gone/x", b"../t"])),
    st.tuples(st.just("fifo"), path),
    st.tuples(st.just("char"), path, st.sampled_from([(1, 3), (300, 70000)])),
    # a link to an earlier file of the layer or, one time in ten, to any path (a lower file,
    # or nothing)
    st.tuples(st.just("hardlink"), path, st.integers(0, 39), path),
    st.tuples(st.just("whiteout"), path),
    st.tuples(st.just("opaque"), st.lists(st.sampled_from(NAMES), max_size=2).map(tuple)),
    st.tuples(st.just("root"), meta),
    # a directory of this layer (given or implied) replaced later in the layer by a file or a
    # symlink: what it held goes, its whiteout markers still act on the lower layers
    st.tuples(st.just("replace"), path, st.booleans()),
)


def to_layer(ops: list[tuple]) -> Layer:
    layer = Layer()
    leaves: set[tuple[bytes, ...]] = set()    # ... that are not directories
    files: list[tuple[bytes, ...]] = []
    used: set[tuple[bytes, ...]] = set()      # every path, markers included

    def fits(p: tuple[bytes, ...], leaf: bool) -> bool:
        if p in used or any(p[:i] in leaves for i in range(1, len(p))):
            return False
        return not (leaf and any(q[:len(p)] == p and q != p for q in used))

    for kind, *args in ops:
        if kind == "root":
            if () not in used:
                used.add(())
                layer.dir(".", **args[0])
            continue
        p = args[0]
        if kind == "replace":
            # only markers below it: entries the layer put there and then dropped would have to
            # be checked against the lower layers (a directory over a lower fifo fails to unpack),
            # which create cannot do and merge no longer sees
            below = [q for q in used if q[:len(p)] == p and q != p]
            if any(p[:i] in leaves for i in range(1, len(p) + 1)) or not below or \
                    not all(q[-1].startswith(b".wh.") for q in below):
                continue
            (layer.symlink(b"/".join(p), b"nowhere") if args[1]
             else layer.file(b"/".join(p), b"replaced"))
            used.add(p)
            leaves.add(p)
            continue
        if kind in ("whiteout", "opaque"):
            marker = (p[:-1] + (b".wh." + p[-1],)) if kind == "whiteout" else p + (b".wh..wh..opq",)
            if not fits(marker, True):
                continue
            used.add(marker)
            leaves.add(marker)
            (layer.whiteout if kind == "whiteout" else layer.opaque)(b"/".join(p))
            continue
        leaf = kind != "dir"
        if not fits(p, leaf):
            continue
        name = b"/".join(p)
        if kind == "hardlink":
            if args[1] >= 36:
                # create refuses a link to a directory it implied for earlier entries
                if any(q[:len(args[2])] == args[2] and len(q) > len(args[2]) for q in used):
                    continue
                layer.hardlink(name, b"/".join(args[2]))
            elif files:
                layer.hardlink(name, b"/".join(files[args[1] % len(files)]))
            else:
                continue
        elif kind == "dir":
            layer.dir(name, **args[1])
        elif kind == "file":
            layer.file(name, args[2], **args[1])
            files.append(p)
        elif kind == "symlink":
            layer.symlink(name, args[1])
        elif kind == "fifo":
            layer.fifo(name)
        else:
            layer.char(name, *args[1])
        used.add(p)
        if leaf:
            leaves.add(p)
    return _directories_first(layer)


def _directories_first(layer: Layer) -> Layer:
    """Tar writers put a directory before what it holds; nothing else of the order is fixed.
    (Only this makes a directory entry over a lower symlink mean one thing: after its own
    entries, a runtime would have unpacked them through the symlink first.)"""
    def parts(ti: tarfile.TarInfo) -> tuple[bytes, ...]:
        return tuple(x for x in os.fsencode(ti.name).split(b"/") if x and x != b".")

    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for ti, data in layer.entries:
        if ti.type == tarfile.DIRTYPE:
            p = parts(ti)
            below = [i for i, (t, _) in enumerate(out) if len(parts(t)) > len(p) and parts(t)[:len(p)] == p]
            if below:
                out.insert(below[0], (ti, data))
                continue
        out.append((ti, data))
    layer.entries = out
    return layer


@settings(max_examples=80, deadline=None)
@given(stack=st.lists(st.lists(op, min_size=2, max_size=12), min_size=2, max_size=5),
       version=st.sampled_from([5, 6]), layout=st.sampled_from(["A", "B"]))
def test_merge_equals_reference(stack: list[list[tuple]], version: int, layout: str) -> None:
    layers = [to_layer(ops) for ops in stack]
    try:
        want = reference(layers)
    except Refused:
        want = None
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        if want is None:   # a hard link to nothing, or to a directory
            with pytest.raises((LayerError, MergeError)):
                merge(build_layers(layers, work, version=version, layout=layout))
            return
        data = merge(build_layers(layers, work, version=version, layout=layout)).bootstrap()
        out = work / "merged.boot"
        write_outputs([(str(out), data)])
        diffs = differences(snapshot_image(out, [work / "layers"]), want)
        assert not diffs, "\n".join(diffs)


# --- whiteouts inside a directory the same layer replaces -----------------------------------------
# The markers leave the layer's tree with their directory, yet OCI applies them before the layer's
# entries: a hard link of the layer to a lower file they hide must fail, as it fails for the
# reference and for check's reference, and must never bring the file back.

LOWER = Layer().dir("d").file("d/f", b"lower f").file("d/g", b"lower g").dir("d/e") \
    .file("d/e/h", b"lower h").file("k", b"lower k")
UPPER_OPS = [
    ("whiteout", "d/f"), ("whiteout", "d/e/h"), ("whiteout", "d/e"), ("opaque", "d"),
    ("opaque", "d/e"), ("hardlink", "x", "d/f"), ("hardlink", "y", "d/e/h"),
    ("hardlink", "z", "k"), ("file", "d/new"), ("replace-file", "d"), ("replace-symlink", "d"),
    ("replace-file", "d/e"),
]   # no entry below d/e or d/new's directory clashes with the lower layer's non-directories


def _upper(ops: list[tuple[str, ...]]) -> Layer:
    layer = Layer()
    for kind, *args in ops:
        if kind == "whiteout":
            layer.whiteout(args[0])
        elif kind == "opaque":
            layer.opaque(args[0])
        elif kind == "hardlink":
            layer.hardlink(args[0], args[1])
        elif kind == "file":
            layer.file(args[0], b"upper")
        elif kind == "replace-file":
            layer.file(args[0], b"replaced")
        else:
            layer.symlink(args[0], "nowhere")
    return layer


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.sampled_from(UPPER_OPS), min_size=1, max_size=6, unique=True),
       version=st.sampled_from([5, 6]))
def test_markers_of_a_replaced_directory(ops: list[tuple[str, ...]], version: int) -> None:
    layers = [LOWER, _upper(ops)]
    try:
        want = reference(layers)
    except Refused:
        want = None
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        tars = [str(layer.write(work / f"oracle{i}.tar")) for i, layer in enumerate(layers)]
        try:
            check_reference.reference(tars)
            oracle_refuses = False
        except LayerError:
            oracle_refuses = True
        assert oracle_refuses == (want is None), (ops, want)
        if want is None:
            with pytest.raises((LayerError, MergeError)):
                merge(build_layers(layers, work, version=version))
            return
        data = merge(build_layers(layers, work, version=version)).bootstrap()
        out = work / "merged.boot"
        write_outputs([(str(out), data)])
        diffs = differences(snapshot_image(out, [work / "layers"]), want)
        assert not diffs, "\n".join(diffs)
