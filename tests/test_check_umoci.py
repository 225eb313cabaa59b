"""The reference side agrees with `umoci unpack` (an independent OCI layer extractor) on a
multi-layer image with deletions, opaque directories, type changes and hard links across
layers. The image is assembled with umoci itself (init, new, raw add-layer)."""

from __future__ import annotations

import pathlib
import subprocess
import time

import corpus
from conftest import needs_root, needs_tool
from corpus import Layer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_check_e2e import stack

from nydusfs.check import CheckOptions, oracle, run_check
from nydusfs.errors import LayerError

pytestmark = [needs_root, needs_tool("umoci")]


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


DIRS, LEAVES = ["a", "b", "c"], ["x", "y"]
MTIMES = st.sampled_from(["1600000000.000000001", "1700000000.5", "1700000000.999999999"])
dirpath = st.lists(st.sampled_from(DIRS), max_size=2).map("/".join)
leaf = st.sampled_from(LEAVES + DIRS[:1])


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


entry = st.one_of(
    st.tuples(st.just("dir"), dirpath, st.sampled_from(DIRS), st.sampled_from([0o755, 0o700, 0o1777]),
              MTIMES, st.sampled_from([None, b"1", b"\xff"])),
    st.tuples(st.just("file"), dirpath, leaf, st.binary(max_size=40), st.sampled_from([0o644, 0o4755]),
              MTIMES, st.sampled_from([0, 7])),
    st.tuples(st.just("symlink"), dirpath, leaf, st.sampled_from(["a", "../b", "/c", "a/b", "nowhere", "x"])),
    st.tuples(st.just("hardlink"), dirpath, leaf, dirpath, st.sampled_from(LEAVES)),
    st.tuples(st.just("whiteout"), dirpath, st.sampled_from(LEAVES + DIRS)),
    st.tuples(st.just("opaque"), dirpath),
)


def _layer(entries: list[tuple]) -> Layer:
    """Whiteouts and opaque markers first, as the OCI image spec asks producers to write them:
    they apply to the layers below only, while umoci applies them in tar order, so a marker
    after an entry of its own layer would measure that umoci quirk, not the oracle."""
    layer = Layer()
    markers = [e for e in entries if e[0] in ("whiteout", "opaque")]
    for e in markers + [e for e in entries if e not in markers]:
        if e[0] == "dir":
            layer.dir(_join(e[1], e[2]), mode=e[3], mtime=e[4], xattrs={b"user.x": e[5]} if e[5] else None)
        elif e[0] == "file":
            layer.file(_join(e[1], e[2]), e[3], mode=e[4], mtime=e[5], uid=e[6])
        elif e[0] == "symlink":
            layer.symlink(_join(e[1], e[2]), e[3])
        elif e[0] == "hardlink" and _join(e[1], e[2]) != _join(e[3], e[4]):
            layer.hardlink(_join(e[1], e[2]), _join(e[3], e[4]))
        elif e[0] == "whiteout":
            layer.whiteout(_join(e[1], e[2]))
        elif e[0] == "opaque":
            layer.opaque(e[1])
    return layer


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(entry, min_size=1, max_size=7), min_size=1, max_size=3))
def test_random_stacks_agree_with_umoci(tmp_path_factory, stacks):
    """Random small stacks (type changes, links, whiteouts, symlinked parents): umoci and the
    oracle refuse the same stacks (a hard link to a name that does not exist at that point), and
    where both accept the layers they hold the same tree. A umoci failure on a stack the oracle
    accepts fails the test. One umoci deviation is set aside: it restores only the immediate
    parent's metadata after an entry, so an explicit directory above a directory it has to
    create gets the current time as mtime."""
    tmp = tmp_path_factory.mktemp("stack")
    layers = [_layer(entries) for entries in stacks]
    tars = [str(layer.write(tmp / f"l{i}.tar")) for i, layer in enumerate(layers)]
    try:
        oracle.reference(tars)
        refused = None
    except LayerError as e:
        refused = str(e)
    started = time.time_ns() - 1_000_000_000
    image = f"{tmp / 'oci'}:t"
    umoci("init", "--layout", str(tmp / "oci"))
    umoci("new", "--image", image)
    for tar in tars:
        umoci("raw", "add-layer", "--image", image, tar)
    unpacked = subprocess.run(["umoci", "unpack", "--image", image, str(tmp / "bundle")],
                              capture_output=True, check=False)
    if refused is not None:
        assert unpacked.returncode != 0, f"the oracle refused ({refused}) but umoci unpacked the stack"
        return
    assert unpacked.returncode == 0, f"umoci refused a stack the oracle accepts: {unpacked.stderr!r}"
    diffs = run_check(CheckOptions(bootstrap=None, layers=tars, mounted=str(tmp / "bundle/rootfs"))).differences
    diffs = [d for d in diffs if not (d.field == "mtime" and int(d.found.split(".")[0]) * 10**9 >= started)]
    assert diffs == []


def test_umoci_comparison_can_fail(tmp_path):
    """The same comparison notices a layer umoci did not see."""
    layers = layers_with_deletions()
    tars, rootfs = unpack_with_umoci(tmp_path, layers)
    extra = Layer().whiteout("etc/conf").file("new-file", b"n").write(tmp_path / "extra.tar")
    diffs = run_check(CheckOptions(bootstrap=None, layers=[*tars, str(extra)], mounted=str(rootfs))).differences
    assert {(d.path, d.field) for d in diffs} == {(b"/etc/conf", "extra"), (b"/new-file", "missing")}
