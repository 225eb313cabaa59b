"""Which requests reach the server: after the first OPEN and OPENDIR are answered with ENOSYS,
the kernel opens files and directories itself (no OPEN/RELEASE/OPENDIR/RELEASEDIR round trips),
and reads and listings still return the image's bytes and names."""

from __future__ import annotations

import os
import pathlib

import pytest
from conftest import needs_root
from corpus import pattern
from mount_helpers import Built, ImageBuilder, Mounts

pytestmark = needs_root


@pytest.fixture
def built(tmp_path: pathlib.Path) -> Built:
    b = ImageBuilder(version=6, chunk_size=0x10000)
    b.file("d/big", pattern(3 << 20, 7))
    b.file("d/small", b"small\n")
    b.file("e/other", pattern(5000, 3))
    return b.build(tmp_path / "img")


def handled(log: str, op: str) -> int:
    return sum(1 for line in log.splitlines() if f" DEBUG {op}(" in line)


def test_open_and_opendir_reach_the_server_once(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--debug", "--no-prefetch")
    for _ in range(3):
        assert sorted(os.listdir(m.path / "d")) == ["big", "small"]
        assert os.listdir(m.path / "e") == ["other"]
        assert (m.path / "d/big").read_bytes() == pattern(3 << 20, 7)
        assert (m.path / "d/small").read_bytes() == b"small\n"
        assert (m.path / "e/other").read_bytes() == pattern(5000, 3)
        with open(m.path / "d/big", "rb") as f:      # reads at offsets, through a new open
            f.seek((1 << 20) + 123)
            assert f.read(70000) == pattern(3 << 20, 7)[(1 << 20) + 123:(1 << 20) + 70123]
    log = m.log()
    assert "kernel skips OPEN/OPENDIR: True" in log, log
    assert handled(log, "open") == 1, log
    assert handled(log, "opendir") == 1, log
    assert handled(log, "read") >= 1 and handled(log, "readdir") >= 1, log


def test_skipopen_finds_pyfuse3_symbols_as_readelf_does() -> None:
    """The shim's ELF symbol lookup against binutils' readelf, an independent reader."""
    import subprocess

    import pyfuse3

    from nydusfs.fuse import skipopen

    path = os.path.realpath(pyfuse3.__file__)
    wanted = {f"__pyx_f_7pyfuse3_fuse_{op}" for op in skipopen.OPS} | {"__pyx_v_7pyfuse3_session"}
    table = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, check=True).stdout
    expected = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[7] in wanted:
            expected[parts[7]] = int(parts[1], 16)
    assert len(expected) == len(wanted), expected
    assert skipopen._symbols(path, wanted) == expected
    assert skipopen._symbols(path, {"no_such_symbol_anywhere"}) == {}
