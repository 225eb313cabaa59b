"""`nydusfs create`: every edge case of a layer tar, read back through the reader and compared
field by field with what the stdlib tarfile module sees in the same tar."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

import corpus
from nydusfs.create.pipeline import CreateOptions, create
from nydusfs.cli import main
from nydusfs.format.blob import digest
from nydusfs.format.flags import BlobFeatures, SuperFlags
from nydusfs.reader import open_image
from tarview import compare, tar_view

CHUNK = corpus.CHUNK


def build(tmp_path, layer_tar, kind="A", **kw):
    """Build with the given output kind; returns (path to open, blob dirs)."""
    opts = dict(chunk_size=CHUNK, **kw)
    if kind in ("A", "B"):
        out = tmp_path / f"layer.{kind}"
        create(str(layer_tar), CreateOptions(output=str(out), layout=kind, **opts))
        return out, []
    boot = tmp_path / "layer.boot"
    blobs = tmp_path / "blobs"
    create(str(layer_tar), CreateOptions(bootstrap=str(boot), blob_dir=str(blobs), **opts))
    return boot, [blobs]


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("compressor", ["none", "lz4_block", "zstd"])
@pytest.mark.parametrize("kind", ["A", "B", "separate"])
def test_everything_round_trips(tmp_path, version, compressor, kind):
    src = corpus.everything().write(tmp_path / "layer.tar")
    path, dirs = build(tmp_path, src, kind, fs_version=version, compressor=compressor)
    with open_image(path, dirs) as image:
        assert image.version == version and image.compressor == compressor
        assert compare(tar_view(src), image) == []


@pytest.mark.parametrize("case", sorted(corpus.EDGE_CASES))
@pytest.mark.parametrize("version", [5, 6])
def test_each_edge_case(tmp_path, case, version):
    src = corpus.EDGE_CASES[case]().write(tmp_path / "layer.tar")
    path, dirs = build(tmp_path, src, "A", fs_version=version)
    with open_image(path, dirs) as image:
        assert compare(tar_view(src), image) == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_input_detected_from_bytes(tmp_path, compression):
    src = corpus.regular_files().write(tmp_path / "layer.bin", compression)
    plain = corpus.regular_files().write(tmp_path / "layer.tar")
    path, dirs = build(tmp_path, src, "A")
    with open_image(path, dirs) as image:
        assert compare(tar_view(plain), image) == []


def test_stdin_source(tmp_path):
    raw = corpus.everything().tar()
    out = tmp_path / "layer.nydus"
    proc = subprocess.run([sys.executable, "-m", "nydusfs", "create", "-", "-o", str(out),
                           "--chunk-size", "0x10000", "--output-json", "-"], input=raw,
                          capture_output=True, check=True)
    info = json.loads(proc.stdout)
    assert info["fs_version"] == "6" and info["chunk_count"] > 0
    (tmp_path / "layer.tar").write_bytes(raw)
    with open_image(out) as image:
        assert compare(tar_view(tmp_path / "layer.tar"), image) == []
        assert image.blobs[-1].blob_id == info["blob_id"]


def test_gnu_format_long_names_and_base256_ids(tmp_path):
    layer = corpus.Layer().file("g" * 150 + "/" + "h" * 120, b"gnu long name", uid=(1 << 24) + 3,
                                gid=(1 << 22)).symlink("s", "t" * 300)
    src = layer.write(tmp_path / "layer.tar", fmt=tarfile.GNU_FORMAT)
    raw = src.read_bytes()
    assert b"././@LongLink" in raw and b"\x80" in raw  # GNU long names and base-256 ids are used
    for version in (5, 6):
        path, dirs = build(tmp_path, src, "A", fs_version=version)
        with open_image(path, dirs) as image:
            assert compare(tar_view(src), image) == []


def test_pax_global_header_is_not_an_entry(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        ti = tarfile.TarInfo("f")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    src = tmp_path / "layer.tar"
    src.write_bytes(buf.getvalue())
    path, dirs = build(tmp_path, src, "A")
    with open_image(path, dirs) as image:
        assert [p for p, _ in image.walk()] == [b"/", b"/f"]
        assert image.read(image.resolve("/f"), 0, 10) == b"abc"


def test_chunks_deduplicated_within_layer(tmp_path):
    data = corpus.pattern(3 * CHUNK, 9)
    src = (corpus.Layer().file("a", data).file("b", data).file("c", data[:CHUNK] * 2)).write(tmp_path / "l.tar")
    out = tmp_path / "l.nydus"
    result = create(str(src), CreateOptions(output=str(out), chunk_size=CHUNK))
    assert result.chunk_count == 3 and result.dedup_hits == 5
    with open_image(out) as image:
        a, b, c = (image.chunks(image.resolve(p)) for p in ("/a", "/b", "/c"))
        assert [x.compressed_offset for x in a] == [x.compressed_offset for x in b]
        assert c[0].compressed_offset == c[1].compressed_offset == a[0].compressed_offset
        assert [x.file_offset for x in c] == [0, CHUNK]
        assert image.read(image.resolve("/c"), 0, 2 * CHUNK) == data[:CHUNK] * 2


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("factory", [corpus.empty, corpus.chmod_only])
def test_layers_without_data_have_no_own_blob(tmp_path, version, factory):
    src = factory().write(tmp_path / "l.tar")
    for layout in ("A", "B"):
        out = tmp_path / f"l.{layout}"
        result = create(str(src), CreateOptions(output=str(out), layout=layout, fs_version=version))
        assert result.blob_id is None and result.blobs == []
        with open_image(out) as image:
            assert image.blobs == []
            assert compare(tar_view(src), image) == []
    with tarfile.open(tmp_path / "l.A") as tf:
        assert tf.getnames() == ["image", "image/image.boot"]
    boot, blobs = tmp_path / "b.boot", tmp_path / "blobs"
    create(str(src), CreateOptions(bootstrap=str(boot), blob_dir=str(blobs), fs_version=version))
    assert boot.exists() and not blobs.exists() or list(blobs.iterdir()) == []


def test_layout_a_is_a_standard_tar_with_blob_at_1024(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    out = tmp_path / "l.nydus"
    result = create(str(src), CreateOptions(output=str(out), fs_version=5, chunk_size=CHUNK))
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members) == ["image", "image/image.blob", "image/image.boot"]
        blob_member = members["image/image.blob"]
        assert blob_member.offset_data == 1024 and blob_member.size == result.blob_size
        blob_bytes = tf.extractfile(blob_member).read()
    assert hashlib.sha256(blob_bytes).hexdigest() == result.blob_id
    raw = out.read_bytes()
    with open_image(out) as image:
        for _path, ino in image.walk():
            for c in image.chunks(ino):
                # chunk offsets are absolute in the layer file: the stored bytes are there
                stored = raw[c.compressed_offset:c.compressed_offset + c.compressed_size]
                assert stored == blob_bytes[c.compressed_offset - 1024:][:c.compressed_size]
        assert image.blobs[0].blob_id == result.blob_id
        assert image.blobs[0].compressed_size == result.blob_size


def test_blob_offset_shifts_compressed_offsets_only(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    boot, blob = tmp_path / "l.boot", tmp_path / "l.blob"
    result = create(str(src), CreateOptions(bootstrap=str(boot), blob=str(blob), fs_version=5,
                                            chunk_size=CHUNK, blob_offset=1536))
    # the blob sits at offset 1536 of an outer file named by the blob id: readable by offsets alone
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / result.blob_id).write_bytes(b"\xee" * 1536 + blob.read_bytes())
    with open_image(boot, [outer]) as image:
        first = min(c.compressed_offset for p, i in image.walk() for c in image.chunks(i))
        assert first == 1536
        assert image.blobs[0].compressed_size == blob.stat().st_size
        assert compare(tar_view(src), image) == []


def test_layout_b_v6_has_toc_and_compressed_bootstrap(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    out = tmp_path / "l.nydus"
    create(str(src), CreateOptions(output=str(out), layout="B", chunk_size=CHUNK))
    with open_image(out) as image:
        assert image.layout.kind == "B"
        names = [e.entry_name for e in image.layout.toc]
        assert names == [b"image.blob", b"blob.meta", b"blob.meta.header", b"blob.digest", b"image.boot"]
        assert image.layout.bootstrap.compressor == "zstd"
        b = image.blobs[0]
        assert b.features & BlobFeatures.INLINED_FS_META and b.features & BlobFeatures.HAS_TOC
        assert b.blob_id == "l" and b.raw_id == "x" * 64     # the id comes from the file name
        assert image.flags & SuperFlags.INLINED_CHUNK_DIGEST
        # the ci table inside the blob agrees with the bootstrap's chunk table
        store = image.blob_store
        for _path, ino in image.walk():
            for c in image.chunks(ino):
                ci = store.ci_entry(0, c.index)
                assert (ci.compressed_offset, ci.compressed_size, ci.uncompressed_offset,
                        ci.uncompressed_size, ci.block_id) == (
                    c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                    c.uncompressed_size, c.block_id)


def test_layout_b_v5_trailing_headers(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    out = tmp_path / "l.nydus"
    result = create(str(src), CreateOptions(output=str(out), layout="B", fs_version=5, chunk_size=CHUNK))
    with open_image(out) as image:
        assert [n for n, _ in image.layout.sections] == [b"image.blob", b"image.boot"]
        assert image.layout.toc == ()
        assert image.blobs[0].compressed_size == result.stored_bytes + 512
        assert compare(tar_view(src), image) == []


def test_chunk_dict_chunks_are_not_stored_again(tmp_path):
    shared = corpus.pattern(2 * CHUNK, 21)
    base = corpus.Layer().file("base", shared).write(tmp_path / "base.tar")
    create(str(base), CreateOptions(bootstrap=str(tmp_path / "dict.boot"), blob_dir=str(tmp_path / "blobs"),
                                    chunk_size=CHUNK))
    upper = corpus.Layer().file("same", shared).file("new", b"fresh").write(tmp_path / "up.tar")
    result = create(str(upper), CreateOptions(bootstrap=str(tmp_path / "up.boot"),
                                              blob_dir=str(tmp_path / "blobs"), chunk_size=CHUNK,
                                              chunk_dict=str(tmp_path / "dict.boot")))
    assert result.chunk_count == 1 and result.dedup_hits == 2
    with open_image(tmp_path / "up.boot", [tmp_path / "blobs"]) as image:
        assert len(image.blobs) == 2                       # the dict blob, then the own blob
        same = image.chunks(image.resolve("/same"))
        assert {c.blob_index for c in same} == {0}
        assert image.read(image.resolve("/same"), 0, 3 * CHUNK) == shared
        assert image.read(image.resolve("/new"), 0, 10) == b"fresh"


@pytest.mark.parametrize("version", [5, 6])
def test_prefetch_policy_fs_and_blob(tmp_path, version):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    out = tmp_path / "fs.nydus"
    create(str(src), CreateOptions(output=str(out), fs_version=version, chunk_size=CHUNK,
                                   prefetch_policy="fs", prefetch_patterns=[b"/d/multi", b"/", b"/nope"]))
    with open_image(out) as image:
        assert image.prefetch == [image.resolve("/d/multi"), image.root_ino]
    out = tmp_path / "blob.nydus"
    warnings: list[str] = []
    create(str(src), CreateOptions(output=str(out), fs_version=version, chunk_size=CHUNK,
                                   prefetch_policy="blob", prefetch_patterns=[b"/d/text"]),
           warn=warnings.append)
    with open_image(out) as image:
        text = image.chunks(image.resolve("/d/text"))
        b = image.blobs[0]
        assert image.prefetch == []
        if version == 5:  # v5 blob tables carry a readahead range; v6 ones do not
            assert b.readahead_offset == text[0].compressed_offset - 1024
            assert b.readahead_size == sum(c.compressed_size for c in text)
        else:
            assert (b.readahead_offset, b.readahead_size) == (0, 0)
            assert any("readahead" in w for w in warnings)


def test_unstorable_xattrs_are_dropped_with_a_warning(tmp_path):
    src = corpus.Layer().file("f", b"x", xattrs={b"com.apple.quarantine": b"q", b"user.ok": b"1"}).write(
        tmp_path / "l.tar")
    warnings: list[str] = []
    create(str(src), CreateOptions(output=str(tmp_path / "o"), chunk_size=CHUNK), warn=warnings.append)
    assert any("com.apple.quarantine" in w for w in warnings)
    with open_image(tmp_path / "o") as image:
        assert image.xattrs(image.resolve("/f")) == [(b"user.ok", b"1")]


def test_overlayfs_whiteouts_become_oci_markers(tmp_path):
    src = (corpus.Layer().char("gone", 0, 0).dir("opq", xattrs={b"trusted.overlay.opaque": b"y"})
           .file("opq/kept", b"k").char("realdev", 1, 3)).write(tmp_path / "l.tar")
    create(str(src), CreateOptions(output=str(tmp_path / "o"), whiteout_spec="overlayfs"))
    with open_image(tmp_path / "o") as image:
        paths = sorted(p for p, _ in image.walk())
        assert paths == [b"/", b"/.wh.gone", b"/opq", b"/opq/.wh..wh..opq", b"/opq/kept", b"/realdev"]
        assert image.xattrs(image.resolve("/opq")) == []


def test_large_file_streams_past_4gib(tmp_path):
    """A 4 GiB + 1 byte file through stdin: sizes past 32 bits, zero chunks deduplicated."""
    size = (4 << 30) + 1
    ti = tarfile.TarInfo("big")
    ti.size = size
    header = ti.tobuf(format=tarfile.PAX_FORMAT)
    code = ("import sys;o=sys.stdout.buffer;o.write(bytes.fromhex(sys.argv[1]));z=bytes(1<<20)\n"
            f"n={size}\nwhile n>0:\n k=min(n,len(z));o.write(z[:k]);n-=k\n"
            f"o.write(bytes({(-size) % 512 + 1024}))")
    gen = subprocess.Popen([sys.executable, "-c", code, header.hex()], stdout=subprocess.PIPE)
    out = tmp_path / "big.nydus"
    proc = subprocess.run([sys.executable, "-m", "nydusfs", "create", "-", "-o", str(out),
                           "--fs-version", "6", "--output-json", "-"], stdin=gen.stdout,
                          capture_output=True)
    gen.wait()
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["chunk_count"] == 2 and info["file_bytes"] == size
    with open_image(out) as image:
        ino = image.resolve("/big")
        assert image.inode(ino).size == size
        assert len(image.chunks(ino)) == 4097
        assert image.read(ino, size - 3, 10) == b"\0\0\0"
        assert image.chunks(ino)[-1].block_id == digest(b"\0", "blake3")


def test_kernel_mountable_flag_pads_the_blob(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    boot, blob = tmp_path / "k.boot", tmp_path / "k.blob"
    create(str(src), CreateOptions(bootstrap=str(boot), blob=str(blob), compressor="none",
                                   aligned_chunk=True, chunk_size=CHUNK))
    assert blob.stat().st_size % 4096 == 0
    with open_image(boot, []) as image:
        image.blob_store.files[0] = str(blob)
        for _path, ino in image.walk():
            for c in image.chunks(ino):
                assert c.compressed_offset == c.uncompressed_offset and c.compressed_offset % 4096 == 0
        assert compare(tar_view(src), image) == []


def test_cli_help_lists_defaults():
    proc = subprocess.run([sys.executable, "-m", "nydusfs", "create", "--help"], capture_output=True,
                          text=True, check=True)
    for text in ("--fs-version", "default: 6", "zstd", "--chunk-dict", "--whiteout-spec", "--layout"):
        assert text in proc.stdout


def test_output_json_file(tmp_path):
    src = corpus.regular_files().write(tmp_path / "l.tar")
    assert main(["create", str(src), "-o", str(tmp_path / "o"), "--output-json",
                 str(tmp_path / "o.json"), "-q"]) == 0
    info = json.loads((tmp_path / "o.json").read_text())
    for key in ("fs_version", "compressor", "digester", "blob_id", "blob_size", "chunk_count",
                "inode_count", "bootstrap_size", "timings"):
        assert key in info
    assert info["blobs"] == [info["blob_id"]]
    assert os.path.getsize(tmp_path / "o") > info["blob_size"]


def test_hard_link_to_a_lower_layer_file_is_kept_for_merge(tmp_path):
    from nydusfs.tree.node import LOWER_LINK_XATTR

    src = (corpus.Layer().hardlink("bin/again", "usr/bin/tool").hardlink("bin/third", "usr/bin/tool")
           .hardlink("bin/fourth", "bin/again")).write(tmp_path / "l.tar")
    warnings: list[str] = []
    create(str(src), CreateOptions(output=str(tmp_path / "o")), warn=warnings.append)
    assert any("usr/bin/tool" in w for w in warnings)
    with open_image(tmp_path / "o") as image:
        inos = {image.resolve(p) for p in ("/bin/again", "/bin/third", "/bin/fourth")}
        assert len(inos) == 1
        ino = inos.pop()
        assert image.inode(ino).nlink == 3 and image.inode(ino).size == 0
        assert image.getxattr(ino, LOWER_LINK_XATTR) == b"usr/bin/tool"


def test_whiteout_below_a_file_of_the_same_layer_is_kept_for_merge(tmp_path):
    # a layer that turns directory etc/motd back into a file may still list a marker below it:
    # it has no place in the tree, but still hides lower files (from the layer's hard links)
    src = corpus.Layer().file("etc/motd", b"file again").whiteout("etc/motd/parts").write(tmp_path / "l.tar")
    from nydusfs.tree.node import HIDDEN_MARKERS_XATTR

    create(str(src), CreateOptions(output=str(tmp_path / "o")))
    with open_image(tmp_path / "o") as image:
        assert image.read(image.resolve("/etc/motd"), 0, 100) == b"file again"
        assert image.getxattr(image.root_ino, HIDDEN_MARKERS_XATTR) == b"etc/motd/.wh.parts"
    bad = corpus.Layer().file("etc/motd", b"file").file("etc/motd/real", b"x").write(tmp_path / "b.tar")
    with pytest.raises(Exception, match="not a directory"):
        create(str(bad), CreateOptions(output=str(tmp_path / "b")))
