"""Bootstraps built by upstream nydus-image as merge sources."""

from __future__ import annotations

import pathlib

import pytest
from conftest import fixture_path
from corpus import Layer
from stacks import build_layers, snapshot_image

from nydusfs.errors import MergeError
from nydusfs.merge import MergeOptions, merge
from nydusfs.util.output import write_outputs

CASES = {
    "v5": ("repeatable/sha256-nocompress-repeatable", "repeatable/blobs"),
    "v6": ("bootstrap/rafs-v6-2.2.boot", "blobs"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_single_upstream_layer_merges_to_the_same_tree(tmp_path: pathlib.Path, case: str) -> None:
    boot, blobs = (fixture_path(p) for p in CASES[case])
    out = tmp_path / "merged.boot"
    write_outputs([(str(out), merge([boot], MergeOptions(keep_blob_ids=True)).bootstrap())])
    assert snapshot_image(out, [blobs]) == snapshot_image(boot, [blobs])


def test_upstream_v5_layers_with_different_digesters(tmp_path: pathlib.Path) -> None:
    sha = fixture_path("repeatable/sha256-nocompress-repeatable")
    blake = fixture_path("repeatable/blake3-lz4_block-non_repeatable")
    with pytest.raises(MergeError, match="digester") as e:
        merge([sha, blake])
    assert "sha256" in str(e.value) and "blake3" in str(e.value)


def test_upstream_v6_layer_under_a_nydusfs_layer(tmp_path: pathlib.Path) -> None:
    """An upstream v6 layer (1 MiB chunks, blake3) with a nydusfs layer on top."""
    boot, blobs = (fixture_path(p) for p in CASES["v6"])
    base = snapshot_image(boot, [blobs])
    victim = next(p for p, e in base.items() if e.kind == "file")
    top = Layer().whiteout(victim.decode("utf-8", "surrogateescape").lstrip("/")).file("added", b"new")
    (upper,) = build_layers([top], tmp_path, chunk_size=0x100000)
    out = tmp_path / "merged.boot"
    ids = ["be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef", upper.name]
    write_outputs([(str(out), merge([boot, upper], MergeOptions(original_blob_ids=ids)).bootstrap())])
    snap = snapshot_image(out, [blobs, tmp_path / "layers"])
    assert victim not in snap and snap[b"/added"].content == b"new"
    assert {p: e for p, e in snap.items() if p not in (b"/", b"/added")} == \
        {p: e for p, e in base.items() if p not in (b"/", victim)}
