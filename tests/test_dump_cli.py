"""`nydusfs dump`: every fixture bootstrap dumps (rich and JSON), the JSON schema, --path,
--verify, layer files, undecodable names, and errors as one line with exit status 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys

import pytest
from conftest import fixture_path

from nydusfs.cli import main
from nydusfs.format.flags import SuperFlags
from nydusfs.reader import open_image
from nydusfs.tree.node import Node, Tree, new_dir
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6

V6_BLOB = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"

# bootstrap (or layer file), blob dir, expected layout
DUMPABLE = {
    "bootstrap/rafs-v6-2.2.boot": ("blobs", "bootstrap"),
    "repeatable/sha256-nocompress-repeatable": ("repeatable/blobs", "bootstrap"),
    "repeatable/blake3-lz4_block-non_repeatable": ("repeatable/blobs", "bootstrap"),
    "historic/repeatable-2020/blake3-lz4_block-non_repeatable": ("repeatable/blobs", "bootstrap"),
    "historic/repeatable-2020/sha256-nocompress-repeatable": ("repeatable/blobs", "bootstrap"),
    "acceleration-service/v5-image.boot": (None, "bootstrap"),
    "acceleration-service/v6-image-raw-size-438272.boot": (None, "bootstrap"),
    "nydus-snapshotter/v5-bootstrap-file-size-736032.tar.gz": (None, "tarball"),
    "nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz": (None, "tarball"),
    "toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca": (None, "B"),
}
INODE_KEYS = {"path", "ino", "mode", "uid", "gid", "size", "nlink", "mtime", "mtime_nsec", "rdev",
              "symlink", "xattrs", "chunks"}
INT_KEYS = INODE_KEYS - {"path", "symlink", "xattrs", "chunks"}
CHUNK_KEYS = {"blob_index", "blob_id", "compressed_offset", "compressed_size", "uncompressed_offset",
              "uncompressed_size", "digest", "flags", "file_offset", "index"}


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["dump", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def dump_json(capsys, *argv) -> dict:
    rc, out, err = run(capsys, "--json", *argv)
    assert rc == 0, err
    return json.loads(out)


def no_floats(value) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return True


@pytest.mark.parametrize("rel", DUMPABLE)
def test_every_fixture_dumps_as_json(rel, capsys):
    _blob_dir, layout = DUMPABLE[rel]
    doc = dump_json(capsys, fixture_path(rel))
    assert {"superblock", "blobs", "prefetch", "inodes"} <= doc.keys()
    assert doc["layout"] == layout and doc["bootstrap"] == str(fixture_path(rel))
    assert no_floats(doc)
    with open_image(fixture_path(rel)) as im:
        walked = [(os.fsdecode(p), ino) for p, ino in im.walk()]
        assert [(i["path"], i["ino"]) for i in doc["inodes"]] == walked
        assert doc["superblock"]["flags_decoded"] == [f.name for f in SuperFlags if im.flags & f]
        assert [b["blob_id"] for b in doc["blobs"]] == [b.blob_id for b in im.blobs]
        assert [p["ino"] for p in doc["prefetch"]] == im.prefetch
    for node in doc["inodes"]:
        assert INODE_KEYS <= node.keys()
        assert all(type(node[k]) is int for k in INT_KEYS), node
        assert stat.S_IFMT(node["mode"]) != 0  # the full st_mode, type bits included
        assert all(CHUNK_KEYS <= c.keys() for c in node["chunks"])
        assert all(isinstance(v, str) and bytes.fromhex(v) is not None for v in node["xattrs"].values())


@pytest.mark.parametrize("rel", [r for r in DUMPABLE if not r.endswith(".tar.gz")])  # rich is slow;
def test_every_fixture_dumps_as_tables(rel, capsys):  # the tarballs hold the accel bootstraps
    rc, out, err = run(capsys, fixture_path(rel), "--no-chunks")
    assert rc == 0 and err == ""
    with open_image(fixture_path(rel)) as im:
        count = sum(1 for _ in im.walk())
        assert f"Superblock: RAFS v{im.version}" in out
        assert all(b.blob_id in out for b in im.blobs)
    assert out.rstrip().endswith(f"{count} inodes")


# Values pinned below, each with where it comes from; test_pinned_values_come_from_independent_
# readers derives every one of them again without nydusfs: dump.erofs (erofs-utils), struct reads
# at the offsets of the upstream record definitions (tables in test_known_answers.py), the
# zstandard and blake3 libraries on the blob bytes, and upstream's own expected-output file.
V6_BOOT = "bootstrap/rafs-v6-2.2.boot"
V6_PINNED = {
    "magic": 0xE0F5E1E2,          # dump.erofs -s "Filesystem magic number"
    "root_nid": 128,              # dump.erofs -s "Filesystem root nid"
    "inos": 3,                    # dump.erofs -s "Filesystem inode count"
    "s_flags": 0x194,             # u64 at 1152 (RafsV6SuperBlockExt.s_flags): INLINED_CHUNK_DIGEST
                                  # 0x100 | COMPRESSION_ZSTD 0x80 | EXPLICIT_UID_GID 0x10 | HASH_BLAKE3 0x4
    "chunk_size": 0x100000,       # u32 at 1152 + 20 (s_chunk_size)
    "chunk_count": 2,             # u32 at blob table + 72 (RafsV6Blob.chunk_count)
    "blob_toc_size": 1024,        # u32 at blob table + 104 (RafsV6Blob.blob_toc_size)
    "device": {"blocks": 9, "mapped_blkaddr": 512},   # u32s at 1408 + 64, + 68 (RafsV6Device)
    "lib.rs": (133, 0o100644, 16931, 1, 1676819553, 628661334),   # dump.erofs --path=/lib.rs:
                                  # NID, regular file + Access, Size, Links, Timestamp (UTC)
    "chunk0": (0, 4828, 16931),   # zstd frame at blob offset 0, 4828 bytes -> 16931 bytes whose
                                  # blake3 is the chunk digest
}
V5_BOOT = "repeatable/sha256-nocompress-repeatable"
V5_PINNED = {
    "s_magic": 0x52414653,        # u32 at 0 (RafsV5SuperBlock.s_magic)
    "s_flags": 9,                 # u64 at 16: COMPRESSION_NONE 0x1 | HASH_SHA256 0x8
    "s_inodes_count": 51,         # u64 at 24
    "root-1": "/////////////////",   # upstream's sha256-nocompress-repeatable.result
    "hardlink": (5, 3),           # i_ino (at 40) and i_nlink (at 88) of the three regular-file
                                  # records named foo / test.sh
    "head-hole-1": 3,             # i_child_count (at 96): chunk records of the file
}


def test_v6_json_values(capsys):
    doc = dump_json(capsys, fixture_path(V6_BOOT))
    sb = doc["superblock"]
    want = V6_PINNED
    assert (sb["magic"], sb["root_nid"], sb["inos"], sb["s_flags"]) == (
        want["magic"], want["root_nid"], want["inos"], want["s_flags"])
    assert (sb["compressor"], sb["digester"], sb["chunk_size"]) == ("zstd", "blake3", want["chunk_size"])
    (b,) = doc["blobs"]
    assert b["blob_id"] == V6_BLOB and b["chunk_count"] == want["chunk_count"]
    assert b["device"] == want["device"]
    assert "HAS_TOC" in b["features_decoded"] and b["blob_toc_size"] == want["blob_toc_size"]
    lib = next(i for i in doc["inodes"] if i["path"] == "/lib.rs")
    assert (lib["ino"], lib["mode"], lib["size"], lib["nlink"], lib["mtime"], lib["mtime_nsec"]) == want["lib.rs"]
    assert (lib["symlink"], lib["xattrs"]) == (None, {})
    (c,) = lib["chunks"]
    with open_image(fixture_path(V6_BOOT)) as im:
        (chunk,) = im.chunks(133)
    assert c["digest"] == chunk.block_id.hex() and c["blob_id"] == V6_BLOB
    assert (c["compressed_offset"], c["compressed_size"], c["uncompressed_size"]) == want["chunk0"]
    assert c["flags_decoded"] == ["COMPRESSED"]


def test_v5_json_values_and_symlinks(capsys):
    doc = dump_json(capsys, fixture_path(V5_BOOT))
    sb = doc["superblock"]
    want = V5_PINNED
    assert (sb["s_magic"], sb["s_flags"], sb["s_inodes_count"]) == (
        want["s_magic"], want["s_flags"], want["s_inodes_count"])
    assert sb["flags_decoded"] == ["COMPRESSION_NONE", "HASH_SHA256"]
    by_path = {i["path"]: i for i in doc["inodes"]}
    assert by_path["/symlink-test/root-1"]["symlink"] == want["root-1"]
    assert by_path["/symlink-test/root-1"]["mode"] == stat.S_IFLNK | 0o777
    links = [by_path[p] for p in ("/hardlink-test/foo", "/hardlink-test/test.sh", "/normal-file-test/test.sh")]
    assert {(n["ino"], n["nlink"]) for n in links} == {want["hardlink"]}
    assert len(by_path["/normal-file-test/holefiles/head-hole-1"]["chunks"]) == want["head-hole-1"]


def test_pinned_values_come_from_independent_readers():
    import blake3
    import zstandard
    from test_dump_erofs import dump_erofs, field, utc

    # RAFS v6: dump.erofs, struct reads at upstream offsets, zstd + blake3 on the blob
    boot = fixture_path(V6_BOOT)
    raw = boot.read_bytes()
    out = dump_erofs(boot, 1, "-s")
    assert int(field(out, "Filesystem magic number"), 16) == V6_PINNED["magic"]
    assert int(field(out, "Filesystem root nid")) == V6_PINNED["root_nid"]
    assert int(field(out, "Filesystem inode count")) == V6_PINNED["inos"]
    ext = 1024 + 128
    assert struct.unpack_from("<Q", raw, ext)[0] == V6_PINNED["s_flags"]
    assert struct.unpack_from("<I", raw, ext + 20)[0] == V6_PINNED["chunk_size"]
    table = struct.unpack_from("<Q", raw, ext + 8)[0]
    assert raw[table:table + 64].decode() == V6_BLOB
    assert struct.unpack_from("<I", raw, table + 72)[0] == V6_PINNED["chunk_count"]
    assert struct.unpack_from("<I", raw, table + 104)[0] == V6_PINNED["blob_toc_size"]
    assert raw[1408:1408 + 64].decode() == V6_BLOB
    device = struct.unpack_from("<II", raw, 1408 + 64)
    assert dict(zip(("blocks", "mapped_blkaddr"), device, strict=True)) == V6_PINNED["device"]
    out = dump_erofs(boot, 1, "--path=/lib.rs")
    nid, mode, size, nlink, sec, nsec = V6_PINNED["lib.rs"]
    assert int(field(out, "NID").split()[0]) == nid
    assert re.search(rb"^Size: %d\s.*regular file$" % size, out, re.MULTILINE)
    assert re.search(rb"Links: %d\s" % nlink, out)
    assert re.search(rb"Access: %04o/" % (mode & 0o777), out)
    assert field(out, "Timestamp") == utc(sec, nsec)
    blob = fixture_path(f"blobs/{V6_BLOB}").read_bytes()
    offset, csize, usize = V6_PINNED["chunk0"]
    data = zstandard.ZstdDecompressor().decompress(blob[offset:offset + csize], max_output_size=1 << 20)
    assert len(data) == usize
    with open_image(boot) as im:
        assert blake3.blake3(data).digest() == im.chunks(nid)[0].block_id

    # RAFS v5: struct reads at upstream offsets, and upstream's expected output file
    raw = fixture_path(V5_BOOT).read_bytes()
    assert struct.unpack_from("<IQQ", raw, 0)[0] == V5_PINNED["s_magic"]
    assert struct.unpack_from("<Q", raw, 16)[0] == V5_PINNED["s_flags"]
    assert struct.unpack_from("<Q", raw, 24)[0] == V5_PINNED["s_inodes_count"]
    result = fixture_path(V5_BOOT + ".result").read_text()
    assert '{{"type":"link","name":"root-1","target":"{}"'.format(V5_PINNED["root-1"]) in result
    table, entries = struct.unpack_from("<Q", raw, 32)[0], struct.unpack_from("<I", raw, 56)[0]
    records = {}
    for i in range(entries):
        at = struct.unpack_from("<I", raw, table + 4 * i)[0] << 3
        if at:
            name = raw[at + 128:at + 128 + struct.unpack_from("<H", raw, at + 100)[0]]
            mode = struct.unpack_from("<I", raw, at + 60)[0]
            if stat.S_ISREG(mode):
                records.setdefault(name, []).append(
                    (struct.unpack_from("<Q", raw, at + 40)[0], struct.unpack_from("<I", raw, at + 88)[0],
                     struct.unpack_from("<I", raw, at + 96)[0]))
    links = records[b"foo"] + records[b"test.sh"]
    assert len(links) == 3 and {(ino, nlink) for ino, nlink, _ in links} == {V5_PINNED["hardlink"]}
    assert [count for _ino, _nlink, count in records[b"head-hole-1"]] == [V5_PINNED["head-hole-1"]]


def test_path_shows_one_inode(capsys):
    doc = dump_json(capsys, fixture_path("bootstrap/rafs-v6-2.2.boot"), "--path", "/sync_io.rs")
    # 13400: dump.erofs --path=/sync_io.rs "Size", and the zstd frame after chunk 0 decompresses
    # to it (test_pinned_values_come_from_independent_readers checks chunk 0 the same way)
    assert doc["path"] == "/sync_io.rs" and doc["size"] == 13400 and len(doc["chunks"]) == 1
    assert "verify" not in doc
    rc, out, _ = run(capsys, fixture_path("bootstrap/rafs-v6-2.2.boot"), "--path", "/sync_io.rs")
    assert rc == 0 and "Inode /sync_io.rs" in out and "13400" in out and "Chunks" in out
    assert "Superblock" not in out


def test_path_that_does_not_exist_is_an_error(capsys):
    rc, out, err = run(capsys, fixture_path("bootstrap/rafs-v6-2.2.boot"), "--path", "/nope")
    assert rc == 2 and out == ""
    assert err.startswith("nydusfs dump: error: ") and "/nope" in err and err.count("\n") == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_passes_with_intact_blobs(as_json, capsys):
    args = [fixture_path("bootstrap/rafs-v6-2.2.boot"), "--blob-dir", fixture_path("blobs"), "--verify"]
    rc, out, err = run(capsys, *args, *(["--json"] if as_json else []))
    assert rc == 0, out + err
    if as_json:
        assert json.loads(out)["verify"] == {"failures": []}
    else:
        assert "every chunk read and matched its digest" in out


@pytest.fixture
def corrupt_blob_dir(tmp_path):
    d = tmp_path / "blobs"
    d.mkdir()
    raw = bytearray(fixture_path(f"blobs/{V6_BLOB}").read_bytes())
    raw[4828 + 100] ^= 0xFF  # inside chunk 1 (sync_io.rs): chunk 0's frame is 4828 bytes (V6_PINNED)
    (d / V6_BLOB).write_bytes(raw)
    return d


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_exits_1_on_a_corrupted_blob_copy(as_json, corrupt_blob_dir, capsys):
    args = [fixture_path("bootstrap/rafs-v6-2.2.boot"), "--blob-dir", corrupt_blob_dir, "--verify"]
    rc, out, _err = run(capsys, *args, *(["--json"] if as_json else []))
    assert rc == 1
    if as_json:
        failures = json.loads(out)["verify"]["failures"]
        assert [(f["path"], f["index"], f["blob_index"]) for f in failures] == [("/sync_io.rs", 1, 0)]
        assert f"blob {V6_BLOB} chunk 1" in failures[0]["error"]
    else:
        assert "verify failed" in out and "/sync_io.rs" in out and V6_BLOB in out
        assert "1 verification failure(s)" in out


def test_verify_of_one_path(corrupt_blob_dir, capsys):
    boot = fixture_path("bootstrap/rafs-v6-2.2.boot")
    assert run(capsys, boot, "--blob-dir", corrupt_blob_dir, "--verify", "--path", "/lib.rs")[0] == 0
    doc = json.loads(run(capsys, boot, "--blob-dir", corrupt_blob_dir, "--verify", "--path",
                         "/sync_io.rs", "--json")[1])
    assert [f["index"] for f in doc["verify"]["failures"]] == [1]


def test_verify_without_blobs_reports_every_chunk(capsys):
    rc, out, _ = run(capsys, fixture_path("bootstrap/rafs-v6-2.2.boot"), "--verify", "--json")
    assert rc == 1
    failures = json.loads(out)["verify"]["failures"]
    assert len(failures) == 2 and all("not found" in f["error"] for f in failures)


def test_no_chunks_leaves_chunk_lists_out(capsys):
    doc = dump_json(capsys, fixture_path("bootstrap/rafs-v6-2.2.boot"), "--no-chunks")
    assert all("chunks" not in i for i in doc["inodes"])


@pytest.fixture(params=[5, 6])
def odd_names_image(request, tmp_path):
    """Names, a symlink target and an xattr name that are not UTF-8, markup-like names, a device."""
    root = new_dir()
    root.children[b"caf\xe9"] = Node(mode=stat.S_IFREG | 0o644, xattrs={b"user.\xff": b"\x00\x01"})
    root.children[b"l\xff"] = Node(mode=stat.S_IFLNK | 0o777, symlink=b"t\xfe")
    root.children[b"[bold]x[/]"] = Node(mode=stat.S_IFLNK | 0o777, symlink=b"[/nope]")
    root.children[b"tty"] = Node(mode=stat.S_IFCHR | 0o620, rdev=os.makedev(4, 65))
    tree = Tree(root=root, version=request.param)
    path = tmp_path / f"odd{request.param}.boot"
    path.write_bytes((write_v5 if request.param == 5 else write_v6)(tree)[0])
    return path


def test_json_escapes_undecodable_bytes_like_fsdecode(odd_names_image, capsys):
    doc = dump_json(capsys, odd_names_image)
    by_path = {i["path"]: i for i in doc["inodes"]}
    assert os.fsdecode(b"/caf\xe9") in by_path and "/caf\udce9" in by_path
    assert by_path["/caf\udce9"]["xattrs"] == {os.fsdecode(b"user.\xff"): "0001"}
    assert by_path[os.fsdecode(b"/l\xff")]["symlink"] == os.fsdecode(b"t\xfe")
    assert by_path["/[bold]x[/]"]["symlink"] == "[/nope]"
    assert by_path["/tty"]["rdev"] == os.makedev(4, 65)
    assert by_path["/tty"]["mode"] == stat.S_IFCHR | 0o620
    # names map back to the exact bytes
    assert {os.fsencode(p) for p in by_path} == {b"/", b"/caf\xe9", b"/l\xff", b"/[bold]x[/]", b"/tty"}


def test_tables_show_undecodable_and_markup_like_names_literally(odd_names_image, capsys):
    rc, out, err = run(capsys, odd_names_image)
    assert rc == 0 and err == ""
    assert "/caf\\xe9" in out and "user.\\xff" in out and "t\\xfe" in out
    assert "/[bold]x[/]" in out and "[/nope]" in out
    assert "4:65" in out
    rc, out, _ = run(capsys, odd_names_image, "--path", os.fsdecode(b"/caf\xe9"))
    assert rc == 0 and "xattr user.\\xff" in out


def test_console_script_prints_odd_names_in_any_locale(odd_names_image):
    for lang in ("C", "C.UTF-8"):
        env = dict(os.environ, LC_ALL=lang, LANG=lang, PYTHONIOENCODING="")
        p = subprocess.run([sys.executable, "-m", "nydusfs", "dump", str(odd_names_image)],
                           capture_output=True, env=env, check=False)
        assert p.returncode == 0, p.stderr
        assert b"/caf\\xe9" in p.stdout
        p = subprocess.run([sys.executable, "-m", "nydusfs", "dump", "--json", str(odd_names_image)],
                           capture_output=True, env=env, check=False)
        assert p.returncode == 0 and json.loads(p.stdout)["inodes"]


@pytest.mark.parametrize("rel,words", [
    ("bootstrap/nydusd_daemon_test_bootstrap", ["unsupported legacy layout"]),
    ("nydus-snapshotter/invalid.tar.gz", ["image/image.boot"]),
    ("tar/empty.tar", ["0 bytes"]),
    (f"blobs/{V6_BLOB}", ["image.boot"]),
])
def test_bad_inputs_are_one_line_errors_with_status_2(rel, words, capsys):
    for extra in ([], ["--json"]):
        rc, out, err = run(capsys, fixture_path(rel), *extra)
        assert rc == 2 and out == ""
        assert err.startswith("nydusfs dump: error: ") and err.count("\n") == 1
        assert str(fixture_path(rel)) in err and all(w in err for w in words)


def test_missing_file_is_an_error(tmp_path, capsys):
    rc, _out, err = run(capsys, tmp_path / "nothing")
    assert rc == 2 and "nothing" in err and "No such file" in err


def test_layer_file_finds_its_bootstrap(tmp_path, capsys):
    layer = tmp_path / "layer"
    shutil.copyfile(fixture_path("toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"), layer)
    doc = dump_json(capsys, layer, "--verify")
    assert doc["layout"] == "B" and doc["verify"] == {"failures": []}
    # the names dump.erofs --ls lists for the layer's bootstrap (test_dump_erofs.test_toc_layer_fixture)
    assert [i["path"] for i in doc["inodes"]] == ["/", "/error.rs", "/lib.rs", "/logger.rs"]
    assert doc["blobs"][0]["file"] == str(layer)
