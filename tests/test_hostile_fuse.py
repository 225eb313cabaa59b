"""One bad inode must not take down its neighbours: bootstraps edited by hand so that one file
holds a size, block count or mtime that FUSE cannot carry (at or past 2^63, up to 2^64-1), on
real mounts. The directory still lists every entry, the bad one shows clamped values, the
neighbours show theirs, the server logs the fault once and keeps serving."""

from __future__ import annotations

import os
import pathlib
import struct

import hostile
import pytest
from conftest import needs_root

from nydusfs.reader import open_image

pytestmark = needs_root

S64_MAX = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
# field offsets inside the on-disk records (docs: rafs-v5.md, rafs-v6.md)
V5_FIELDS = {"size": 64, "blocks": 72, "mtime": 112}
V6_FIELDS = {"size": 8, "mtime": 32}


def _image(tmp: pathlib.Path, version: int) -> pathlib.Path:
    layer = hostile.write(tmp / "layer.tar",
                          hostile.member(b"d/", b"5", mtime=1000),
                          hostile.member(b"d/a", data=b"first", mtime=1001),
                          hostile.member(b"d/bad", data=b"", mtime=1002),
                          hostile.member(b"d/z", data=b"last", mtime=1003))
    out = tmp / f"v{version}.boot"
    done = hostile.run("create", layer, "--bootstrap", out, "--blob-dir", tmp,
                       "--fs-version", version, "-q")
    assert done.returncode == 0, done.stderr
    return out


def _edit(boot: pathlib.Path, version: int, values: dict[str, int]) -> None:
    """Overwrite fields of the inode of /d/bad in place."""
    with open_image(boot) as image:
        offset = image.inode(image.resolve("/d/bad")).offset
    fields = V5_FIELDS if version == 5 else V6_FIELDS
    raw = bytearray(boot.read_bytes())
    for name, value in values.items():
        struct.pack_into("<Q", raw, offset + fields[name], value)
    boot.write_bytes(bytes(raw))


CASES = [
    {"size": 1 << 63},
    {"size": U64_MAX},
    {"mtime": 1 << 63},
    {"mtime": U64_MAX},
    {"size": U64_MAX, "mtime": U64_MAX},
]


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("values", CASES, ids=lambda v: "+".join(f"{k}={v[k]:#x}" for k in v))
def test_readdir_lists_every_entry_past_a_bad_inode(tmp_path, mounts, version, values):
    boot = _image(tmp_path, version)
    if version == 5 and "size" in values:
        values = dict(values, blocks=values["size"])   # v5 records i_blocks too
    _edit(boot, version, values)
    for field in values:
        mounts.expect_log(rf"inode \d+: {field} \d+ cannot be shown through FUSE")
    m = mounts.mount(boot, "--blob-dir", tmp_path)
    d = m.path / "d"
    assert sorted(os.listdir(d)) == ["a", "bad", "z"]
    # the neighbours are intact, attributes and data
    assert (d / "a").read_bytes() == b"first"
    assert (d / "z").read_bytes() == b"last"
    assert os.stat(d / "a").st_mtime_ns == 1001 * 10**9
    assert os.stat(d / "z").st_mtime_ns == 1003 * 10**9
    # the bad one shows clamped values, never an error
    st = os.lstat(d / "bad")
    if "size" in values:
        assert st.st_size == S64_MAX
        assert st.st_blocks > 0
    else:
        assert st.st_size == 0
    if "mtime" in values:
        assert st.st_mtime_ns == S64_MAX * 10**9
    else:
        assert st.st_mtime_ns == 1002 * 10**9
    # listing again (kernel caches dropped or not) and a find over the tree both work
    entries = sorted(e.name for e in os.scandir(d))
    assert entries == ["a", "bad", "z"]
    walked = sorted(os.path.relpath(os.path.join(r, f), m.path)
                    for r, ds, fs in os.walk(m.path) for f in fs)
    assert walked == ["d/a", "d/bad", "d/z"]
    # logged once per inode and field, however often the entry is listed
    for _ in range(3):
        os.listdir(d)
        os.lstat(d / "bad")
    log = m.log()
    for field in values:
        assert log.count(f": {field} ") == 1, log
    assert "Traceback" not in log


def test_readdir_leaves_out_only_an_entry_whose_inode_does_not_decode(tmp_path, mounts):
    """A v6 dirent whose nid points past the bootstrap: that entry is left out (logged once),
    the rest of the directory lists and reads."""
    boot = _image(tmp_path, 6)
    with open_image(boot) as image:
        nid = image.resolve("/d/bad")
    raw = bytearray(boot.read_bytes())
    pattern = struct.pack("<Q", nid)
    hits = [i for i in range(0, len(raw) - 12, 4)
            if raw[i:i + 8] == pattern and raw[i + 10] == 1 and raw[i + 11] == 0]   # FT_REG dirent
    assert len(hits) == 1, hits
    struct.pack_into("<Q", raw, hits[0], 1 << 40)
    boot.write_bytes(bytes(raw))
    mounts.expect_log(r"readdir: inode \d+: entry b'bad' \(inode \d+\) left out")
    mounts.expect_log(r"lookup\(\d+, b'bad'\): .*expected an inode inside")   # the lstat below
    m = mounts.mount(boot, "--blob-dir", tmp_path)
    d = m.path / "d"
    for _ in range(3):
        assert sorted(os.listdir(d)) == ["a", "z"]
    assert (d / "a").read_bytes() == b"first"
    assert (d / "z").read_bytes() == b"last"
    with pytest.raises(OSError):
        os.lstat(d / "bad")
    log = m.log()
    assert log.count("left out") == 1, log
