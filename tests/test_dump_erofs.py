"""RAFS v6 bootstraps read by erofs-utils' dump.erofs and by `nydusfs dump --json`, field by field.

dump.erofs (erofs-utils, written for the kernel's EROFS) shares no code with nydusfs. It runs on
the upstream v6 fixtures and on v6 bootstraps nydusfs wrote (create and merge). Compared:

* superblock (`dump.erofs -s`): magic, blocks, meta_blkaddr, xattr_blkaddr, root_nid, inos,
  build time, feature names, uuid;
* every path (`dump.erofs --path=P`, resolved by dump.erofs through the directory blocks): nid,
  file type, permission bits, uid, gid, size, nlink, data layout, inode size (compact or
  extended), mtime to the nanosecond, and the inline xattr area size derived from the xattrs
  nydusfs lists, by the entry size rule of erofs_fs.h;
* every directory (`dump.erofs --ls --path=D`): the names, nids and dirent file types.

What erofs-utils 1.5 computes differently is stated where it is used: "Filesystem blocks"
adds the blocks of every device slot to the superblock's own, "Access" shows mode & 0777, and
times are printed in the local zone (the tests set TZ=UTC).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import stat
import subprocess
import sys
import tarfile

import corpus
import pytest
import stacks
from conftest import fixture_path, require_tool
from mount_helpers import nydusfs

from nydusfs.format.layer import open_bootstrap

ENV = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}

# erofs-utils dump/main.c file_category_types[], the word dump.erofs prints per file type
TYPE_WORDS = {"dir": b"directory", "file": b"regular file", "symlink": b"symlink file",
              "char": b"char dev", "block": b"block dev", "fifo": b"FIFO file", "socket": b"SOCK file"}
# erofs_fs.h EROFS_FT_* by file kind
FT = {"file": 1, "dir": 2, "char": 3, "block": 4, "fifo": 5, "socket": 6, "symlink": 7}
# erofs_fs.h name index prefixes: the prefix is stored as an index, only the suffix as bytes
PREFIXES = [b"system.posix_acl_access", b"system.posix_acl_default", b"user.", b"trusted.",
            b"security."]


def dump_erofs(boot: pathlib.Path, devices: int, *args: str) -> bytes:
    tool = require_tool("dump.erofs", "erofs-utils")
    # dump.erofs reads only metadata here; each extra device (blob) must be named, any file will do
    dev = [f"--device={os.devnull}"] * devices
    done = subprocess.run([tool, *dev, *args, str(boot)], capture_output=True, env=ENV, timeout=60,
                          check=False)
    assert done.returncode == 0 and b"<E>" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


def ours(boot: pathlib.Path) -> dict:
    done = nydusfs("dump", boot, "--json", "--no-chunks")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def field(out: bytes, label: str) -> str:
    m = re.search(rb"^" + re.escape(label.encode()) + rb":\s+(.*?)\s*$", out, re.MULTILINE)
    assert m, f"{label!r} not in dump.erofs output:\n{out.decode(errors='replace')}"
    return m.group(1).decode()


def xattr_area_size(xattrs: dict[str, str]) -> int:
    """erofs_fs.h: 12-byte erofs_xattr_ibody_header, then per entry round_up(4 + name suffix +
    value, 4); 0 without xattrs (what dump.erofs prints as 'Xattr size')."""
    if not xattrs:
        return 0
    total = 12
    for name, hexvalue in xattrs.items():
        raw = os.fsencode(name)
        prefix = next(p for p in PREFIXES if raw.startswith(p))
        n = 4 + len(raw) - len(prefix) + len(bytes.fromhex(hexvalue))
        total += (n + 3) // 4 * 4
    return total


def utc(sec: int, nsec: int) -> str:
    when = datetime.datetime.fromtimestamp(sec, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S") + f".{nsec:09d}"


def compare(boot: pathlib.Path, stride: int = 1) -> int:
    """Every field both tools show; returns the number of paths compared. Every directory is
    listed (so every path's name, nid and type is checked); the inode fields are checked for
    every `stride`-th path (one dump.erofs run each)."""
    doc = ours(boot)
    sb = doc["superblock"]
    devices = sb["extra_devices"]
    out = dump_erofs(boot, devices, "-s")
    assert int(field(out, "Filesystem magic number"), 16) == sb["magic"] == 0xE0F5E1E2
    # erofs-utils adds the device slots' blocks (erofs_init_devices) to s_blocks
    assert int(field(out, "Filesystem blocks")) == sb["blocks"] + sum(
        b["device"]["blocks"] for b in doc["blobs"])
    assert int(field(out, "Filesystem inode metadata start block")) == sb["meta_blkaddr"]
    assert int(field(out, "Filesystem shared xattr metadata start block")) == sb["xattr_blkaddr"]
    assert int(field(out, "Filesystem root nid")) == sb["root_nid"]
    assert int(field(out, "Filesystem inode count")) == sb["inos"]
    created = datetime.datetime.strptime(field(out, "Filesystem created"), "%a %b %d %H:%M:%S %Y")
    assert created.replace(tzinfo=datetime.UTC).timestamp() == sb["build_time"]
    features = set(field(out, "Filesystem features").split())
    # erofs_fs.h: INCOMPAT_CHUNKED_FILE 0x4 "chunked_file", INCOMPAT_DEVICE_TABLE 0x8 "device_table"
    want = {n for bit, n in ((0x4, "chunked_file"), (0x8, "device_table")) if sb["feature_incompat"] & bit}
    assert features == want
    assert field(out, "Filesystem UUID").replace("-", "") == sb["uuid"]

    inodes = doc["inodes"]
    assert inodes, "nothing to compare"
    children: dict[bytes, list[tuple[bytes, int, str]]] = {}
    for i, n in enumerate(inodes):
        path = os.fsencode(n["path"])
        if path != b"/":
            parent, _, name = path.rpartition(b"/")
            children.setdefault(parent or b"/", []).append((name, n["ino"], n["type"]))
        if i % stride:
            continue
        out = dump_erofs(boot, devices, b"--path=".decode() + n["path"])
        what = f"{n['path']!r}"
        m = re.search(rb"^Size: (\d+)\s+On-disk size: \d+\s+(.+?)\s*$", out, re.MULTILINE)
        assert m, out
        assert (int(m.group(1)), m.group(2)) == (n["size"], TYPE_WORDS[n["type"]]), what
        assert int(field(out, "NID").split()[0]) == n["ino"], what
        nums = dict(re.findall(rb"(NID|Links|Layout|Inode size|Xattr size|Uid|Gid): +(\d+)", out))
        assert int(nums[b"Links"]) == n["nlink"], what
        assert int(nums[b"Layout"]) == (n["i_format"] >> 1) & 0x7, what
        assert int(nums[b"Inode size"]) == (32 if n["compact"] else 64), what
        assert int(nums[b"Xattr size"]) == xattr_area_size(n["xattrs"]), what
        assert (int(nums[b"Uid"]), int(nums[b"Gid"])) == (n["uid"], n["gid"]), what
        access = re.search(rb"Access: (\d+)/", out)
        assert access and int(access.group(1), 8) == stat.S_IMODE(n["mode"]) & 0o777, what
        assert field(out, "Timestamp") == utc(n["mtime"], n["mtime_nsec"]), what
    for directory, entries in children.items():
        out = dump_erofs(boot, devices, "--ls", "--path=" + os.fsdecode(directory))
        listed = re.findall(rb"^\s+(\d+)\s+(\d+)\s+(.+)$", out.split(b"FILENAME", 1)[1], re.MULTILINE)
        got = sorted((name, int(nid), int(ft)) for nid, ft, name in listed if name not in (b".", b".."))
        assert got == sorted((name, nid, FT[kind]) for name, nid, kind in entries), directory
    return len(inodes)


# --- upstream fixtures ------------------------------------------------------------------------

def _bare(tmp: pathlib.Path, source: pathlib.Path) -> pathlib.Path:
    """The bootstrap bytes of a layer file or tarball, as a bare file dump.erofs can open."""
    buf, _layout, keep = open_bootstrap(str(source))
    boot = tmp / (source.name + ".boot")
    boot.write_bytes(bytes(buf))
    del buf
    if keep is not None:
        keep.close()
    return boot


def test_rafs_v6_fixture(tmp_path):
    assert compare(fixture_path("bootstrap/rafs-v6-2.2.boot")) == 3


def test_acceleration_service_v6_fixture():
    """3517 paths: every directory listed, the inode fields of every 10th path (each is one
    dump.erofs process; all of them would add half a minute to the suite)."""
    assert compare(fixture_path("acceleration-service/v6-image-raw-size-438272.boot"), stride=10) == 3517


def test_snapshotter_v6_tarball_holds_the_same_bootstrap():
    # taken out with tarfile, not with nydusfs: byte for byte the fixture compared above
    src = fixture_path("nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz")
    with tarfile.open(src) as tf:
        member = next(m for m in tf.getmembers() if m.name.lstrip("./") == "image/image.boot")
        raw = tf.extractfile(member).read()  # type: ignore[union-attr]
    assert raw == fixture_path("acceleration-service/v6-image-raw-size-438272.boot").read_bytes()


def test_toc_layer_fixture(tmp_path):
    assert compare(_bare(tmp_path, fixture_path(
        "toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"))) > 1


# --- nydusfs's own v6 output ------------------------------------------------------------------

def test_create_output(tmp_path):
    tar = corpus.everything().write(tmp_path / "layer.tar")
    done = nydusfs("create", tar, "--bootstrap", tmp_path / "l.boot", "--blob", tmp_path / "l.blob",
                   "--fs-version", "6")
    assert done.returncode == 0, done.stderr
    assert compare(tmp_path / "l.boot") > 40


@pytest.mark.parametrize("name", ["three_layers", "hardlinks_to_lower_files", "non_utf8_names",
                                  "specials_carried"])
def test_merge_output(tmp_path, name):
    paths = stacks.build_layers(stacks.STACKS[name]().layers, tmp_path, version=6)
    done = nydusfs("merge", *paths, "--bootstrap", tmp_path / "image.boot")
    assert done.returncode == 0, done.stderr
    assert compare(tmp_path / "image.boot") > 3


@pytest.mark.parametrize("change", [("uid", 1), ("mtime_nsec", 1), ("nlink", 1), ("mode", 0o1),
                                    ("size", 1), ("ino", 32)])
def test_the_comparison_can_fail(tmp_path, monkeypatch, change):
    """Each compared inode field, changed on the nydusfs side only, makes compare() fail."""
    tar = corpus.Layer().file("a", b"abc", uid=7).write(tmp_path / "a.tar")
    done = nydusfs("create", tar, "--bootstrap", tmp_path / "a.boot", "--blob", tmp_path / "a.blob",
                   "--fs-version", "6")
    assert done.returncode == 0, done.stderr
    real = ours(tmp_path / "a.boot")
    key, delta = change
    node = next(n for n in real["inodes"] if n["path"] == "/a")
    node[key] += delta
    monkeypatch.setattr(sys.modules[__name__], "ours", lambda boot: real)
    with pytest.raises(AssertionError):
        compare(tmp_path / "a.boot")
