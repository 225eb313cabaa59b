"""Deep directory chains, sizes no chunk backs, and check's memory per entry (docs/limits.md).

Paths are limited to PATH_MAX (4096 bytes) everywhere a path is built; below that every verb is
linear in depth. Each CLI run is bounded in memory and time by tests/bounded.py.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc

import pytest
from bounded import assert_clean, assert_error, run
from conftest import needs_root
from corpus import MTIME, Layer

from nydusfs.check import CheckOptions, run_check
from nydusfs.errors import FormatError
from nydusfs.format.flags import InodeFlagsV5
from nydusfs.format.v5 import V5Inode
from nydusfs.reader import open_image
from nydusfs.tree.node import Node, Tree, new_dir
from nydusfs.util.limits import MAX_PATH
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6


def deep_member_tar(depth: int) -> bytes:
    """One file under `depth` directories named 'a', none of them with an entry of its own."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("/".join(["a"] * depth) + "/f")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


def empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return d


def deep_bootstrap(depth: int, version: int) -> bytes:
    root = new_dir()
    cur = root
    for _ in range(depth):
        d = new_dir()
        assert cur.children is not None
        cur.children[b"a"] = d
        cur = d
    assert cur.children is not None
    cur.children[b"f"] = Node(mode=stat.S_IFREG | 0o644)
    writer = write_v5 if version == 5 else write_v6
    return writer(Tree(root=root, version=version, compressor="none"))[0]


@pytest.mark.parametrize("depth", [20_000, 100_000])
def test_create_refuses_paths_past_path_max(tmp_path, depth):
    src = tmp_path / "deep.tar"
    src.write_bytes(deep_member_tar(depth))
    assert_error(run("create", src, "-o", tmp_path / "out"), "PATH_MAX", str(src))
    assert_error(run("check", "--mounted", empty_dir(tmp_path), "--layers", src), str(src))
    assert not (tmp_path / "out").exists()


def test_a_chain_up_to_path_max_goes_through_every_verb(tmp_path):
    depth = (MAX_PATH - len("/f")) // 2          # '/a' per level: the path is 4096 bytes at most
    src = tmp_path / "deep.tar"
    src.write_bytes(deep_member_tar(depth))
    layer = tmp_path / "deep.nydus"
    assert_clean(run("create", src, "-o", layer), (0,))
    assert_clean(run("check", layer, "--layers", src), (0,))
    merged = tmp_path / "merged.boot"
    assert_clean(run("merge", layer, "--bootstrap", merged), (0,))
    assert_clean(run("dump", "--json", "--no-chunks", merged), (0,))
    with open_image(layer) as im:
        paths = [p for p, _ in im.walk()]
    assert len(paths) == depth + 2 and len(paths[-1]) == 2 * depth + 2 <= MAX_PATH
    # one level more is past PATH_MAX for create and for check's reference
    src.write_bytes(deep_member_tar(depth + 1))
    assert_error(run("create", src, "-o", tmp_path / "more.nydus"), "PATH_MAX")
    assert_error(run("check", layer, "--layers", src), "PATH_MAX")


def test_symlinks_cannot_stretch_a_path_past_path_max(tmp_path):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
        link = tarfile.TarInfo("l")
        link.type = tarfile.SYMTYPE
        link.linkname = "/".join(["d"] * 1500)                  # 2999 bytes
        tf.addfile(link)
        info = tarfile.TarInfo("l/" + "/".join(["e"] * 1000) + "/f")   # 2003 bytes
        tf.addfile(info, io.BytesIO(b""))
    src = tmp_path / "stretch.tar"
    src.write_bytes(tar.getvalue())
    assert_error(run("create", src, "-o", tmp_path / "out"), "PATH_MAX", "symlinks")
    assert_error(run("check", "--mounted", empty_dir(tmp_path), "--layers", src), "PATH_MAX")


@pytest.mark.parametrize("version", [5, 6])
def test_a_20000_deep_bootstrap_is_a_clear_error_in_every_verb(tmp_path, version):
    boot = tmp_path / "deep.boot"
    boot.write_bytes(deep_bootstrap(20_000, version))
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("f", b"x").tar())
    for args in (["dump", "--json", boot], ["dump", "--verify", boot], ["check", boot, "--layers", layer],
                 ["merge", boot, "--bootstrap", tmp_path / "m.boot"]):
        line = assert_error(run(*args), "PATH_MAX", str(boot))
        assert len(line) < 600
    assert not (tmp_path / "m.boot").exists()


@needs_root
def test_mount_serves_a_chain_deeper_than_path_max(tmp_path, mounts):
    """FUSE has no paths: the mount answers each level's lookup in constant time, so a chain
    past PATH_MAX is walked with openat, one level at a time."""
    boot = tmp_path / "deep.boot"
    boot.write_bytes(deep_bootstrap(5_000, 6))
    m = mounts.mount(boot)
    fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(5_000):
            nxt = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        assert os.listdir(fd) == ["f"]
    finally:
        os.close(fd)


# --- sizes no chunk backs -----------------------------------------------------------------------

def hole_bootstrap(size: int, has_hole: bool = False) -> bytes:
    """A v5 image whose /huge has `size` bytes and no chunk. Without HAS_HOLE that is a broken
    chunk map (refused); with it, the whole file is a hole (zeros)."""
    root = new_dir()
    assert root.children is not None
    root.children[b"huge"] = Node(mode=stat.S_IFREG | 0o644, size=size, mtime=int(MTIME))
    root.children[b"small"] = Node(mode=stat.S_IFREG | 0o644, size=0, mtime=int(MTIME))
    raw = bytearray(write_v5(Tree(root=root, version=5, compressor="none"))[0])
    if has_hole:
        import tempfile

        with tempfile.NamedTemporaryFile() as f:
            f.write(raw)
            f.flush()
            with open_image(f.name) as im:
                at = im.inode(im.resolve("/huge")).offset + V5Inode.field_offset("i_flags")
        flags = int.from_bytes(raw[at:at + 8], "little") | InodeFlagsV5.HAS_HOLE
        raw[at:at + 8] = flags.to_bytes(8, "little")
    return bytes(raw)


def test_a_2_62_byte_file_with_no_chunks_is_a_size_difference_not_a_read(tmp_path):
    boot = tmp_path / "hole.boot"
    boot.write_bytes(hole_bootstrap(1 << 62))
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("huge", b"").file("small", b"").tar())
    proc = run("check", boot, "--layers", layer, "--json", "-")
    assert_clean(proc, (1,))
    import json
    report = json.loads(proc.stdout)
    # the size differs, and no chunk backs it (the chunk-map rule of the verifier)
    assert [(d["path"], d["field"]) for d in report["differences"]] == [("/huge", "size"), ("/huge", "chunks")]
    assert report["differences"][0]["found"] == 1 << 62
    assert_clean(run("dump", "--verify", boot), (0, 1))
    with open_image(boot) as im:
        ino = im.resolve("/huge")
        assert im.backed_bound(ino) == 0
        with pytest.raises(FormatError):       # refused, not read
            im.read(ino, 5, 4096)
    boot.write_bytes(hole_bootstrap(1 << 62, has_hole=True))
    with open_image(boot) as im:                # a declared hole reads as zeros, never allocated whole
        ino = im.resolve("/huge")
        assert im.read(ino, (1 << 62) - 10, 1 << 20) == bytes(10)
        assert im.read(ino, 5, 4096) == bytes(4096)


def test_holes_the_layers_confirm_are_still_hashed(tmp_path):
    """A deferred file whose size the layers confirm is hashed: holes read as zeros."""
    boot = tmp_path / "hole.boot"
    boot.write_bytes(hole_bootstrap(20 << 20, has_hole=True))
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("huge", bytes(20 << 20)).file("small", b"").tar())
    assert_clean(run("check", boot, "--layers", layer), (0,))
    layer.write_bytes(Layer().file("huge", bytes((20 << 20) - 1) + b"x").file("small", b"").tar())
    proc = run("check", boot, "--layers", layer, "--json", "-")
    assert_clean(proc, (1,))
    assert b'"content"' in proc.stdout


# --- check's memory per entry ---------------------------------------------------------------------

def many_files_layer(n: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(n):
            if i % 1000 == 0:
                d = tarfile.TarInfo(f"d{i // 1000:04d}")
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                tf.addfile(d)
            info = tarfile.TarInfo(f"d{i // 1000:04d}/file{i:07d}")
            info.mode = 0o644
            data = b"%d" % i if i % 2 else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_check_memory_per_entry(tmp_path):
    """The Python heap `check` needs per entry (the layers' tree, the image's entries as they
    are compared, the chunk audit, hashing) stays under PER_ENTRY_CEILING, measured as the
    growth of the peak between 5,000 and 15,000 entries. The fixed parts (the reader's inode
    cache, which check bounds at 4,096 inodes, and the hard-link bitmaps) are full at both."""
    peaks = {}
    for n in (5_000, 15_000):
        src = tmp_path / f"l{n}.tar"
        src.write_bytes(many_files_layer(n))
        out = tmp_path / f"l{n}.nydus"
        assert_clean(run("create", src, "-o", out), (0,))
        tracemalloc.start()
        try:
            result = run_check(CheckOptions(bootstrap=str(out), layers=[str(src)], workers=2))
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.equal and result.expected_paths == n + n // 1000 + 1
    per_entry = (peaks[15_000] - peaks[5_000]) / 10_000
    print(f"per entry: {per_entry:.0f} bytes")
    assert per_entry < PER_ENTRY_CEILING, per_entry


PER_ENTRY_CEILING = 400    # bytes of Python heap per entry (measured: 266-274); docs/check.md


def test_unpack_refuses_a_declared_hole_nothing_backs(tmp_path):
    """A tar has no holes: a 2^62-byte file that no chunk backs would be written out as zeros
    for ever; unpack names it and the size instead, and leaves no output."""
    boot = tmp_path / "hole.boot"
    boot.write_bytes(hole_bootstrap(1 << 62, has_hole=True))
    out = tmp_path / "out.tar"
    assert_error(run("unpack", boot, "-o", out), str(boot), "/huge", "field size", str(1 << 62))
    assert not out.exists()
