"""End to end: layer tars -> `create` -> `merge` -> reader, against the simple reference."""

from __future__ import annotations

import pathlib

import pytest
from corpus import Layer
from stacks import STACKS, assert_facts, build_bootstraps, build_layers, differences, reference, snapshot_image

from nydusfs.errors import MergeError
from nydusfs.merge import MergeOptions, merge
from nydusfs.util.output import write_outputs


def merged_snapshot(sources: list[pathlib.Path], out: pathlib.Path, blob_dir: pathlib.Path,
                    options: MergeOptions | None = None):
    result = merge(sources, options)
    write_outputs([(str(out), result.bootstrap())])
    return snapshot_image(out, [blob_dir]), result


@pytest.mark.parametrize("name", sorted(STACKS))
@pytest.mark.parametrize("version,layout", [(6, "A"), (5, "A"), (6, "B"), (5, "B")])
def test_stack(tmp_path: pathlib.Path, name: str, version: int, layout: str) -> None:
    stack = STACKS[name]()
    sources = build_layers(stack.layers, tmp_path, version=version, layout=layout)
    snap, result = merged_snapshot(sources, tmp_path / "merged.boot", tmp_path / "layers")
    assert result.tree.version == version
    assert not differences(snap, reference(stack.layers))
    assert_facts(stack, snap)


@pytest.mark.parametrize("name", ["whiteout_tree", "hardlinks_split", "symlinked_parents"])
def test_stack_bare_bootstraps(tmp_path: pathlib.Path, name: str) -> None:
    """Bare bootstraps whose blobs sit in a blob directory under their own ids."""
    stack = STACKS[name]()
    sources, blob_dir = build_bootstraps(stack.layers, tmp_path)
    snap, _ = merged_snapshot(sources, tmp_path / "merged.boot", blob_dir,
                              MergeOptions(keep_blob_ids=True))
    assert not differences(snap, reference(stack.layers))
    assert_facts(stack, snap)


OVERLAYFS_LOWER = Layer().dir("a").file("a/x", b"x").file("a/y", b"y").dir("o").file("o/old", b"old")
OCI_UPPER = Layer().whiteout("a/x").dir("o", mode=0o700).opaque("o").file("o/new", b"new")


def overlayfs_upper() -> Layer:
    return (Layer().char("a/x", 0, 0).dir("o", mode=0o700, xattrs={b"trusted.overlay.opaque": b"y"})
            .file("o/new", b"new"))


@pytest.mark.parametrize("create_spec,merge_spec", [("overlayfs", "oci"), ("none", "overlayfs")])
def test_overlayfs_whiteouts(tmp_path: pathlib.Path, create_spec: str, merge_spec: str) -> None:
    """Layers with overlayfs markers: rewritten by create (default merge), or kept by create
    and recognised by `merge --whiteout-spec overlayfs`; both as the OCI-marker stack."""
    layers = [OVERLAYFS_LOWER, overlayfs_upper()]
    sources = build_layers(layers, tmp_path, whiteout_spec=create_spec)
    snap, _ = merged_snapshot(sources, tmp_path / "m.boot", tmp_path / "layers",
                              MergeOptions(whiteout_spec=merge_spec))
    assert not differences(snap, reference([OVERLAYFS_LOWER, OCI_UPPER]))
    assert b"/a/x" not in snap and b"/o/old" not in snap


def test_whiteout_spec_none_overlays_plainly(tmp_path: pathlib.Path) -> None:
    layers = [OVERLAYFS_LOWER, OCI_UPPER]
    sources = build_layers(layers, tmp_path)
    snap, _ = merged_snapshot(sources, tmp_path / "m.boot", tmp_path / "layers",
                              MergeOptions(whiteout_spec="none"))
    assert {b"/a/x", b"/a/.wh.x", b"/o/old", b"/o/.wh..wh..opq", b"/o/new"} <= set(snap)


@pytest.mark.parametrize("lower,upper", [
    (None, Layer().hardlink("bin/tool", "usr/bin/tool")),
    (Layer().dir("usr/bin/tool"), Layer().hardlink("bin/tool", "usr/bin/tool")),
    # the layer's whiteouts act first: its link then names nothing
    (Layer().file("usr/bin/tool", b"t"), Layer().hardlink("bin/tool", "usr/bin/tool").whiteout("usr/bin")),
])
def test_hard_link_to_a_missing_lower_file(tmp_path: pathlib.Path, lower: Layer | None, upper: Layer) -> None:
    layers = ([lower] if lower else []) + [upper]
    sources = build_layers(layers, tmp_path)
    with pytest.raises(MergeError, match="usr/bin/tool") as e:
        merge(sources)
    assert f"layer {len(layers) - 1} ({sources[-1]})" in str(e.value)
