"""Images built with the CLI (`nydusfs create` per layer, `nydusfs merge`) from the edge-case
layer corpus, mounted, and compared field by field with the simple reference of tests/stacks.py
(which applies the layer tars itself and shares no code with nydusfs)."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import pytest

from conftest import needs_root
from corpus import EDGE_CASES, Layer, everything
from mount_helpers import REJECTED, Mounts, nydusfs, snapshot_mount
from stacks import STACKS, assert_facts, differences, reference

pytestmark = needs_root

CHUNK = "0x1000"     # small chunks: multi-chunk files from a few KiB



def build_with_cli(layers: list[Layer], work: pathlib.Path, version: int,
                   compressor: str = "zstd") -> tuple[pathlib.Path, pathlib.Path]:
    """Layer tars -> `nydusfs create` (layer files named by digest) -> `nydusfs merge`."""
    layer_dir = work / "layers"
    layer_dir.mkdir(parents=True)
    sources = []
    for i, layer in enumerate(layers):
        tar = layer.write(work / f"layer{i}.tar")
        tmp = work / f"layer{i}.nydus"
        done = nydusfs("create", tar, "-o", tmp, "--fs-version", version, "--chunk-size", CHUNK,
                       "--compressor", compressor, "-q")
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        final = layer_dir / hashlib.sha256(tmp.read_bytes()).hexdigest()
        tmp.rename(final)
        sources.append(final)
    merged = work / "merged.boot"
    done = nydusfs("merge", "--bootstrap", merged, *sources)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return merged, layer_dir


@pytest.mark.parametrize("version", [6, 5])
@pytest.mark.parametrize("name", sorted(EDGE_CASES) + ["everything"])
def test_edge_case_layer(mounts: Mounts, tmp_path: pathlib.Path, name: str, version: int) -> None:
    layers = [everything() if name == "everything" else EDGE_CASES[name]()]
    boot, blob_dir = build_with_cli(layers, tmp_path / "build", version)
    m = mounts.mount(boot, "--blob-dir", blob_dir, "--verify-chunks")
    got = snapshot_mount(m.path)
    assert differences(got, reference(layers)) == []


@pytest.mark.parametrize("name", sorted(STACKS))
def test_layer_stack(mounts: Mounts, tmp_path: pathlib.Path, name: str) -> None:
    stack = STACKS[name]()
    version = 5 if name in ("hardlinks_split", "specials_carried", "three_layers") else 6
    boot, blob_dir = build_with_cli(stack.layers, tmp_path / "build", version,
                                    compressor="lz4_block" if version == 5 else "zstd")
    m = mounts.mount(boot, "--blob-dir", blob_dir)
    got = snapshot_mount(m.path)
    want = reference(stack.layers)
    if name == "specials_carried":
        # its capability is 20 arbitrary bytes: the kernel refuses to hand those out
        cap = (b"security.capability", REJECTED)
        assert cap in got[b"/cap"].xattrs
        xattrs = tuple(x for x in got[b"/cap"].xattrs if x != cap) + \
            tuple(x for x in want[b"/cap"].xattrs if x[0] == cap[0])
        got[b"/cap"] = dataclasses.replace(got[b"/cap"], xattrs=tuple(sorted(xattrs)))
    assert differences(got, want) == []
    assert_facts(stack, got)
