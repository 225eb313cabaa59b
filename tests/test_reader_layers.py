"""Nydus layer files (bootstrap-only tarballs, layouts A and B, the ToC blob with an inlined
bootstrap) and blob errors (digest mismatch, corrupt data) found through `open_image`."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile

import pytest

from conftest import fixture_path
from nydusfs import dump as model
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.errors import BlobError, FormatError
from nydusfs.format import blob
from nydusfs.format.flags import BlobFeatures
from nydusfs.reader import open_image
from nydusfs.tree.load import load_tree

TOC_BLOB = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
REPEATABLE_BLOB = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"


def file_md5s(im) -> dict[bytes, str]:
    return {p: hashlib.md5(im.read(i, 0, im.inode(i).size)).hexdigest()
            for p, i in im.walk() if im.inode(i).is_reg}


def repeatable_md5s() -> dict[bytes, str]:
    boot = fixture_path("repeatable/sha256-nocompress-repeatable")
    with open_image(boot, [fixture_path("repeatable/blobs")]) as im:
        return file_md5s(im)


# --- bootstrap-only layer tarballs (nydus-snapshotter) -----------------------------------------

@pytest.mark.parametrize("tarball,bare", [
    ("nydus-snapshotter/v5-bootstrap-file-size-736032.tar.gz", "acceleration-service/v5-image.boot"),
    ("nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz",
     "acceleration-service/v6-image-raw-size-438272.boot"),
])
def test_bootstrap_tarballs_hold_the_acceleration_service_bootstraps(tarball, bare):
    raw = fixture_path(bare).read_bytes()
    with open_image(fixture_path(tarball)) as im:
        assert im.layout.kind == "tarball"
        assert bytes(im.buf) == raw
        assert len(raw) == (736032 if "v5" in bare else 643072)
        assert len(list(im.walk())) == 3517
    with tarfile.open(fixture_path(tarball)) as tf:
        assert [m.name.rstrip("/") for m in tf] == ["image", "image/image.boot"]


def test_tarball_without_a_bootstrap_is_a_clear_error():
    path = fixture_path("nydus-snapshotter/invalid.tar.gz")
    with pytest.raises(FormatError) as e:
        open_image(path)
    msg = str(e.value)
    assert str(path) in msg and "image/image.boot" in msg and "found none" in msg


def test_tarball_whose_bootstrap_is_not_one_is_a_clear_error():
    path = fixture_path("nydus-snapshotter/invalid-bootstrap-file-size-133513.tar.gz")
    with tarfile.open(path) as tf:
        member = tf.getmember("image/image.boot")
        assert member.size == 133513
        head = tf.extractfile(member).read(8)
    with pytest.raises(FormatError) as e:
        open_image(path)
    msg = str(e.value)
    assert str(path) in msg and "magic" in msg and repr(head) in msg and "offset 0" in msg


@pytest.mark.parametrize("rel", ["tar/empty.tar", "tar/all-entry-type.tar", "stargz/estargz_sample.json",
                                 "zran/bgzip.tar.gz",
                                 f"zstd/{TOC_BLOB}.zst"])
def test_other_files_are_refused_with_a_format_error(rel):
    with pytest.raises(FormatError) as e:
        open_image(fixture_path(rel))
    assert str(fixture_path(rel)) in str(e.value)


# --- layout B with a ToC: the blob that carries its bootstrap ----------------------------------

def test_toc_blob_finds_its_bootstrap_and_serves_its_own_data():
    path = fixture_path(f"toc/{TOC_BLOB}")
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == TOC_BLOB
    with open_image(path) as im:
        assert im.layout.kind == "B"
        toc = [(e.entry_name, e.flags, e.compressed_offset, e.compressed_size, e.uncompressed_size)
               for e in im.layout.toc]
        assert toc == [(b"image.blob", 1, 2829, 2829, 12288), (b"blob.meta", 1, 3341, 48, 48),
                       (b"blob.meta.header", 1, 3389, 4096, 4096),
                       (b"image.boot", 2, 7997, 501, 20480)]
        digests = {e.entry_name: e.uncompressed_digest.hex() for e in im.layout.toc}
        assert digests[b"blob.meta"] == "bf1aa2c1dd760bf063ac3c67d292c0e36eca077df4de7fb1728b8a568ff0bbdd"
        assert digests[b"image.boot"] == "d85f1b77aab4849b34ffc447fee67a46ae9eb2af8533bf5faa62224df1796871"
        # the decompressed image.boot is the bootstrap the reader uses
        assert len(im.buf) == 20480
        assert hashlib.sha256(bytes(im.buf)).hexdigest() == digests[b"image.boot"]
        assert im.version == 6 and im.sb.inos == 4 and im.ext.s_flags == 0x94
        assert im.ext.s_chunk_table_size == 240
        assert im.devices[0].tag.decode() == (
            "d788a0eac4ff9779bc2eae3842117a918d847d90fddbea1503f7c5296a4a7de3")
        # ToC location: 512 bytes of entries plus their header at the end of the file
        assert hashlib.sha256(raw[9010:9010 + 1024]).hexdigest() == (
            "4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c")
        for name, at in ((b"image.blob", 2829), (b"blob.meta", 7485), (b"image.boot", 8498),
                         (b"rafs.blob.toc", 9522)):
            assert blob.parse_blob_tar_header(raw[at:at + 512], at)[0] == name
        names = sorted(p for p, _ in im.walk())
        assert names == [b"/", b"/error.rs", b"/lib.rs", b"/logger.rs"]
        # chunk data lives in the same file, verified against the chunk digests
        assert im.blob_store.path_of(0) == str(path)
        assert list(model.verify(im)) == []
        text = im.read(im.resolve("/lib.rs"), 0, 1 << 20)
        assert len(text) == 678 and text.startswith(b"// Copyright")


def test_zstd_fixture_is_the_toc_blob_compressed():
    raw = fixture_path(f"zstd/{TOC_BLOB}.zst").read_bytes()
    out = blob.decompress(raw, "zstd", 10034)
    assert hashlib.sha256(out).hexdigest() == TOC_BLOB
    assert out == fixture_path(f"toc/{TOC_BLOB}").read_bytes()


def test_toc_with_a_wrong_bootstrap_digest_is_refused(tmp_path):
    raw = bytearray(fixture_path(f"toc/{TOC_BLOB}").read_bytes())
    entry = 9010 + 3 * 128  # the image.boot ToC entry; its digest at +24
    raw[entry + 24] ^= 0xFF
    bad = tmp_path / TOC_BLOB
    bad.write_bytes(raw)
    with pytest.raises(FormatError) as e:
        open_image(bad)
    assert e.value.field == "digest" and "image.boot" in str(e.value) and str(bad) in str(e.value)


# --- layouts A and B built here from the repeatable image -----------------------------------------

def shifted_bootstrap(shift: int, blob_id: str | None = None, features: int | None = None,
                      compressed_size: int | None = None) -> bytes:
    """The repeatable tree re-written with chunk offsets moved by `shift` (--blob-offset)."""
    with open_image(fixture_path("repeatable/sha256-nocompress-repeatable")) as im:
        tree = load_tree(im)
    nodes = {id(node): node for _path, node in tree.walk()}  # hard links: one node, many names
    for node in nodes.values():
        node.chunks = [c.replace(compressed_offset=c.compressed_offset + shift) for c in node.chunks]
    b = tree.blobs[0]
    if blob_id is not None:
        b.blob_id = blob_id
    if features is not None:
        b.features = features
    if compressed_size is not None:
        b.compressed_size = compressed_size
    return write_v5(tree)[0]


def test_layout_a_tar_with_blob_at_1024(tmp_path):
    data = fixture_path(f"repeatable/blobs/{REPEATABLE_BLOB}").read_bytes()
    boot = shifted_bootstrap(1024)
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.USTAR_FORMAT) as tf:
        d = tarfile.TarInfo("image")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, payload in (("image/image.blob", data), ("image/image.boot", boot)):
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    assert layer.read_bytes()[1024:1024 + 64] == data[:64]
    with open_image(layer) as im:
        assert im.layout.kind == "A"
        assert im.layout.blob.offset == 1024 and im.layout.blob.size == len(data)
        assert bytes(im.buf) == boot
        assert im.blob_store.path_of(0) == str(layer)
        assert file_md5s(im) == repeatable_md5s()
        assert list(model.verify(im)) == []


def test_layout_b_v5_with_inlined_bootstrap(tmp_path):
    data = fixture_path(f"repeatable/blobs/{REPEATABLE_BLOB}").read_bytes()
    features = BlobFeatures.CAP_TAR_TOC | BlobFeatures.HAS_TAR_HEADER | BlobFeatures.INLINED_FS_META
    boot = shifted_bootstrap(0, blob_id="x" * 64, features=int(features),
                             compressed_size=len(data) + 512)
    layer = tmp_path / "d0c0ffee.layer"
    layer.write_bytes(data + blob.blob_tar_header(b"image.blob", len(data))
                      + boot + blob.blob_tar_header(b"image.boot", len(boot)))
    with open_image(layer) as im:
        assert im.layout.kind == "B"
        assert (im.layout.blob.offset, im.layout.blob.size) == (0, len(data))
        assert (im.layout.bootstrap.offset, im.layout.bootstrap.size) == (len(data) + 512, len(boot))
        # the placeholder id is replaced by the layer file's name stem
        assert im.blobs[0].raw_id == "x" * 64 and im.blobs[0].blob_id == "d0c0ffee"
        assert file_md5s(im) == repeatable_md5s()


def test_layout_b_without_image_blob_is_a_bootstrap_only_layer(tmp_path):
    boot = fixture_path("bootstrap/rafs-v6-2.2.boot").read_bytes()
    layer = tmp_path / "meta.layer"
    layer.write_bytes(boot + blob.blob_tar_header(b"image.boot", len(boot)))
    with open_image(layer, [fixture_path("blobs")]) as im:
        assert im.layout.kind == "B" and im.layout.blob is None
        assert bytes(im.buf) == boot
        assert len(im.read(im.resolve("/lib.rs"), 0, 1 << 20)) == 16931


def test_layout_b_section_claiming_more_than_the_file_is_a_format_error(tmp_path):
    layer = tmp_path / "bad.layer"
    layer.write_bytes(b"\1" * 100 + blob.blob_tar_header(b"image.boot", 5000))
    with pytest.raises(FormatError) as e:
        open_image(layer)
    assert e.value.field == "size" and e.value.offset == 100 + 124 and str(layer) in str(e.value)


# --- blob errors --------------------------------------------------------------------------------

def corrupt_copy(src, dst_dir, offset: int) -> None:
    dst_dir.mkdir(exist_ok=True)
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x55]))


def test_digest_mismatch_names_blob_and_chunk(tmp_path):
    boot = fixture_path("repeatable/sha256-nocompress-repeatable")
    with open_image(boot, [fixture_path("repeatable/blobs")]) as im:
        ino = im.resolve("/normal-file-test/busybox/manifest.json")
        (c,) = im.chunks(ino)
    corrupt_copy(fixture_path(f"repeatable/blobs/{REPEATABLE_BLOB}"), tmp_path / "blobs",
                 c.compressed_offset + c.compressed_size // 2)
    with open_image(boot, [tmp_path / "blobs"]) as im:
        with pytest.raises(BlobError) as e:
            im.read(ino, 0, 10)
        assert e.value.blob_id == REPEATABLE_BLOB and e.value.chunk == c.index
        msg = str(e.value)
        assert REPEATABLE_BLOB in msg and f"chunk {c.index}" in msg and "digest mismatch" in msg
        assert c.block_id.hex() in msg
        # unverified reads still return the (corrupt) bytes
        assert len(im.read(ino, 0, 10, verify=False)) == 10
        failures = list(model.verify(im))
        assert [(f["path"], f["index"]) for f in failures] == [
            ("/normal-file-test/busybox/manifest.json", c.index)]


def test_corrupt_lz4_chunk_is_a_blob_error(tmp_path):
    lz4_id = "d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac"
    boot = fixture_path("historic/repeatable-2020/blake3-lz4_block-non_repeatable")
    with open_image(boot, [fixture_path("repeatable/blobs")]) as im:
        ino = im.resolve("/normal-file-test/busybox/"
                         "1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar")
        c = im.chunks(ino)[0]
        assert c.compressed_size < c.uncompressed_size
    corrupt_copy(fixture_path(f"repeatable/blobs/{lz4_id}"), tmp_path / "blobs", c.compressed_offset + 1)
    with open_image(boot, [tmp_path / "blobs"]) as im:
        with pytest.raises(BlobError) as e:
            im.read(ino, 0, 10)
        assert e.value.blob_id == lz4_id and lz4_id in str(e.value)


def test_corrupt_zstd_chunk_in_v6_blob_is_a_blob_error(tmp_path):
    v6_id = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
    corrupt_copy(fixture_path(f"blobs/{v6_id}"), tmp_path / "blobs", 4828 + 1000)
    with open_image(fixture_path("bootstrap/rafs-v6-2.2.boot"), [tmp_path / "blobs"]) as im:
        assert len(im.read(im.resolve("/lib.rs"), 0, 1 << 20)) == 16931  # chunk 0 is intact
        with pytest.raises(BlobError) as e:
            im.read(im.resolve("/sync_io.rs"), 0, 10)
        assert e.value.blob_id == v6_id and e.value.chunk == 1
        assert f"blob {v6_id} chunk 1" in str(e.value)


def test_truncated_blob_is_a_blob_error_not_a_short_read(tmp_path):
    (tmp_path / "blobs").mkdir()
    src = fixture_path(f"repeatable/blobs/{REPEATABLE_BLOB}").read_bytes()
    (tmp_path / "blobs" / REPEATABLE_BLOB).write_bytes(src[:len(src) // 2])
    boot = fixture_path("repeatable/sha256-nocompress-repeatable")
    with open_image(boot, [tmp_path / "blobs"]) as im:
        failures = list(model.verify(im))
        assert failures and all(REPEATABLE_BLOB in f["error"] for f in failures)
        assert all("outside" in f["error"] for f in failures)


def test_blob_found_under_its_other_usual_names(tmp_path):
    (tmp_path / "blobs").mkdir()
    os.symlink(fixture_path(f"repeatable/blobs/{REPEATABLE_BLOB}"),
               tmp_path / "blobs" / f"sha256:{REPEATABLE_BLOB}")
    with open_image(fixture_path("repeatable/sha256-nocompress-repeatable"), [tmp_path / "blobs"]) as im:
        assert list(model.verify(im)) == []


def test_blob_ids_never_leave_the_blob_directory(tmp_path):
    """A bootstrap whose blob id is a relative path must not read files outside --blob-dir."""
    outside = tmp_path / "secret"
    outside.write_bytes(b"s" * 4096)
    (tmp_path / "blobs").mkdir()
    boot = shifted_bootstrap(0, blob_id="../secret")
    (tmp_path / "boot").write_bytes(boot)
    with open_image(tmp_path / "boot", [tmp_path / "blobs"]) as im:
        assert im.blobs[0].blob_id == "../secret"
        assert im.blob_store.path_of(0) is None
        with pytest.raises(BlobError) as e:
            im.read(im.resolve("/normal-file-test/test.sh"), 0, 10)
        assert "not found" in str(e.value)
