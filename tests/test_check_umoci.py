"""The reference side agrees with `umoci unpack` (an independent OCI layer extractor) on a
multi-layer image with deletions, opaque directories, type changes and hard links across
layers. The image is assembled with umoci itself (init, new, raw add-layer)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

import corpus
from conftest import needs_root
from corpus import Layer
from nydusfs.check import CheckOptions, run_check
from test_check_e2e import stack

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed (apt install umoci)")]


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def unpack_with_umoci(tmp: pathlib.Path, layers: list[Layer]) -> tuple[list[str], pathlib.Path]:
    image = f"{tmp / 'oci'}:test"
    umoci("init", "--layout", str(tmp / "oci"))
    umoci("new", "--image", image)
    tars = []
    for i, layer in enumerate(layers):
        tar = layer.write(tmp / f"layer{i}.tar")
        umoci("raw", "add-layer", "--image", image, str(tar))
        tars.append(str(tar))
    umoci("unpack", "--image", image, str(tmp / "bundle"))
    return tars, tmp / "bundle" / "rootfs"


def layers_with_deletions() -> list[Layer]:
    # everything() has no whiteouts; the stack adds them, opaque dirs, type changes, links
    lower = corpus.everything()
    lower.entries = [(ti, d) for ti, d in lower.entries if not ti.name.startswith("./")]
    top = (Layer().whiteout("l/sym").opaque("dev").char("dev/null", 1, 3)
           .dir("bin", mode=0o711).whiteout("bin/sgid").file("bin/all", b"replaced", mode=0o700)
           .whiteout("a/b").file("d/text", b"shorter", uid=3, gid=4))
    return [lower, *stack(), top]


def test_reference_agrees_with_umoci_unpack(tmp_path):
    tars, rootfs = unpack_with_umoci(tmp_path, layers_with_deletions())
    result = run_check(CheckOptions(bootstrap=None, layers=tars, mounted=str(rootfs)))
    assert result.expected_paths == result.found_paths > 40
    assert result.differences == []


def test_umoci_comparison_can_fail(tmp_path):
    """The same comparison notices a layer umoci did not see."""
    layers = layers_with_deletions()
    tars, rootfs = unpack_with_umoci(tmp_path, layers)
    extra = Layer().whiteout("etc/conf").file("new-file", b"n").write(tmp_path / "extra.tar")
    diffs = run_check(CheckOptions(bootstrap=None, layers=[*tars, str(extra)], mounted=str(rootfs))).differences
    assert {(d.path, d.field) for d in diffs} == {(b"/etc/conf", "extra"), (b"/new-file", "missing")}
