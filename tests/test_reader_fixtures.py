"""Upstream-built RAFS v6 and v5 bootstraps and blobs: the facts the fixtures README records.

Facts marked (header) or (upstream test) in the README are asserted as given; derived facts
(digests, sizes) are recomputed from the bytes rather than copied from the code under test.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct

import pytest

from conftest import fixture_path
from nydusfs import dump as model
from nydusfs.errors import BlobError, FormatError, UnsupportedError
from nydusfs.format import blob, v5
from nydusfs.format.flags import BlobFeatures, SuperFlags
from nydusfs.format.layer import detect, is_v6_bootstrap
from nydusfs.reader import open_image

V6_BLOB = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
ACCEL_V5_BLOB = "02fef4a13a311de4adc5b34ca152d3a87c9371c76a5f720451c8b9602859b780"
ACCEL_V6_BLOB = "cdde6f5645daea414d60bc75611102a8bc8dae6198f087366365d6ff85bf5726"
LEGACY_BLOB = "66b413a71ac1dc91c0c331ea16867123924cf5a393b65bb025ec8255531463fe"


def v6_22(blobs: bool = True):
    return open_image(fixture_path("bootstrap/rafs-v6-2.2.boot"),
                      [fixture_path("blobs")] if blobs else [])


# --- RAFS v6 2.2 bootstrap and its blob ------------------------------------------------------

def test_v6_22_superblocks():
    with v6_22() as im:
        sb, ext = im.sb, im.ext
        assert (sb.blkszbits, sb.root_nid, sb.inos, sb.blocks, sb.meta_blkaddr) == (12, 128, 3, 9, 2)
        assert (sb.feature_compat, sb.feature_incompat) == (0x40000000, 0xC)
        assert (sb.extra_devices, sb.devt_slotoff) == (1, 11)
        assert ext.s_flags == 0x194
        assert model.superblock(im)["flags_decoded"] == [
            "HASH_BLAKE3", "EXPLICIT_UID_GID", "COMPRESSION_ZSTD", "INLINED_CHUNK_DIGEST"]
        assert (ext.s_blob_table_offset, ext.s_blob_table_size, ext.s_chunk_size) == (4096, 256, 0x100000)
        assert (ext.s_chunk_table_offset, ext.s_chunk_table_size) == (16384, 160)
        assert ext.s_prefetch_table_size == 0 and im.prefetch == []
        assert im.compressor == "zstd" and im.digester == "blake3" and im.version == 6
        # read as a meta blob it is 5 blocks of 4 KiB, zero up to the EROFS magic at 1024
        assert len(im.buf) == 5 * 4096
        assert im.buf[0] == 0 and im.buf[1023] == 0 and im.buf[1024] == 0xE2 and im.buf[1027] == 0xE0


def test_v6_22_device_slot_and_blob_table():
    with v6_22() as im:
        assert len(im.blobs) == 1
        dev = im.devices[0]
        assert dev.tag.decode() == V6_BLOB and dev.blocks == 9 and dev.mapped_blkaddr == 0x200
        b = im.blobs[0]
        assert b.blob_id == b.raw_id == V6_BLOB
        assert (b.compressor, b.digester, b.chunk_count) == ("zstd", "blake3", 2)
        assert b.features == 0x70000021
        e = b.v6
        assert (e.compressed_size, e.uncompressed_size, e.blob_toc_size) == (0x38DA, 0x9000, 0x400)
        assert (e.ci_compressor, e.ci_offset, e.ci_compressed_size) == (0, 0x207A, 0x20)
        # the blob is 9 blocks of 4 KiB uncompressed: 5 for lib.rs and 4 for sync_io.rs
        assert e.uncompressed_size == 9 * 4096 == dev.blocks * 4096


def test_v6_22_tree_and_attributes():
    with v6_22() as im:
        listing = {p: im.inode(i) for p, i in im.walk()}
        assert sorted(listing) == [b"/", b"/lib.rs", b"/sync_io.rs"]
        assert listing[b"/"].mode == stat.S_IFDIR | 0o755 and listing[b"/"].nlink == 2
        assert listing[b"/"].size == 4 * 12 + len(b"." b".." b"lib.rs" b"sync_io.rs")
        for path, size in ((b"/lib.rs", 16931), (b"/sync_io.rs", 13400)):
            n = listing[path]
            assert (n.mode, n.size, n.uid, n.gid, n.nlink) == (stat.S_IFREG | 0o644, size, 0, 0, 1)
            assert n.mtime == 1676819553
        assert listing[b"/lib.rs"].mtime_nsec == 628661334
        assert listing[b"/sync_io.rs"].mtime_nsec == 628993084
        assert [(n, nid) for n, nid, _ in im.dirents(128)] == [
            (b".", 128), (b"..", 128), (b"lib.rs", 133), (b"sync_io.rs", 136)]


def test_v6_22_chunks_resolve_through_table_and_blob_meta_alike():
    with v6_22() as im:
        table = {c.index: c for _, c in im.chunk_table()}
        assert sorted(table) == [0, 1]
        # the table is sorted by digest, not by index
        assert [c.index for _, c in im.chunk_table()] == [1, 0]
        for path, index, blkaddr in ((b"/lib.rs", 0, 0), (b"/sync_io.rs", 1, 5)):
            nid = im.resolve(path)
            (addr,) = im.chunk_addrs(nid)
            assert (addr.blob_index, addr.ci_index, addr.blkaddr) == (0, index, blkaddr)
            (c,) = im.chunks(nid)
            assert c == table[index].replace(file_offset=0)
            assert c.uncompressed_offset == blkaddr * 4096
            meta = im.blob_store.ci_entry(0, index)  # chunk info from the blob's own meta
            assert (meta.compressed_offset, meta.compressed_size, meta.uncompressed_offset,
                    meta.uncompressed_size, meta.block_id) == (
                c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                c.uncompressed_size, c.block_id)
        sync = table[1]
        assert (sync.compressed_offset, sync.compressed_size) == (0x12DC, 0xB9E)
        assert (sync.uncompressed_offset, sync.uncompressed_size) == (0x5000, 0x3458)


@pytest.mark.parametrize("path,size", [("/lib.rs", 16931), ("/sync_io.rs", 13400)])
def test_v6_22_files_read_with_verified_chunks(path, size):
    with v6_22() as im:
        nid = im.resolve(path)
        data = im.read(nid, 0, 1 << 20)
        assert len(data) == size
        (c,) = im.chunks(nid)
        assert blob.digest(data, "blake3") == c.block_id
        assert data.isascii() and b"fn " in data  # Rust sources
        assert im.read(nid, 100, 50) == data[100:150]
    with v6_22() as im:
        assert list(model.verify(im)) == []


def test_v6_22_without_its_blob_reads_metadata_but_not_data():
    with v6_22(blobs=False) as im:
        nid = im.resolve("/lib.rs")
        assert im.chunks(nid)[0].uncompressed_size == 16931  # from the bootstrap chunk table
        with pytest.raises(BlobError) as e:
            im.read(nid, 0, 10)
        assert V6_BLOB in str(e.value) and "not found" in str(e.value)


def test_v6_22_blob_layout_toc_and_ids():
    path = fixture_path(f"blobs/{V6_BLOB}")
    raw = path.read_bytes()
    assert len(raw) == 14554
    fd = os.open(path, os.O_RDONLY)
    try:
        layout = detect(fd, str(path))
    finally:
        os.close(fd)
    assert layout.kind == "B" and layout.bootstrap is None
    toc = [(e.entry_name, e.flags, e.compressed_offset, e.compressed_size, e.uncompressed_size)
           for e in layout.toc]
    assert toc == [(b"image.blob", 1, 7802, 7802, 36864), (b"blob.meta", 1, 8314, 32, 32),
                   (b"blob.meta.header", 1, 8346, 4096, 4096), (b"blob.digest", 1, 12954, 64, 64)]
    # the ToC data (bytes 13530..14041) and each trailing tar header where the README found it
    for name, at, size in ((b"image.blob", 7802, 7802), (b"blob.meta", 12442, 4128),
                           (b"blob.digest", 13018, 64), (b"rafs.blob.toc", 14042, 512)):
        assert blob.parse_blob_tar_header(raw[at:at + 512], at) == (name, size)
        assert blob.blob_tar_header(name, size) == raw[at:at + 512]
    # ToC entry digests: sha256 of the uncompressed content; image.blob includes its header
    for e in layout.toc:
        start, stop = (0, 7802 + 512) if e.entry_name == b"image.blob" else (
            e.compressed_offset, e.compressed_offset + e.compressed_size)
        assert hashlib.sha256(raw[start:stop]).digest() == e.uncompressed_digest
    with v6_22() as im:
        entry = im.blobs[0].v6
        assert hashlib.sha256(raw[-entry.blob_toc_size:]).digest() == entry.blob_toc_digest
        # blob.digest holds the chunk digests in index order
        digests = raw[12954:12954 + 64]
        assert [digests[i * 32:(i + 1) * 32] for i in range(2)] == [
            im.blob_store.ci_entry(0, i).block_id for i in range(2)]
    # the blob id is sha256 of the file without the blob.digest array
    assert hashlib.sha256(raw[:12954] + raw[12954 + 64:]).hexdigest() == V6_BLOB
    assert hashlib.sha256(raw).hexdigest() != V6_BLOB
    # blob.meta: two v1 chunk-info entries, then the 4 KiB header
    header = blob.BlobMetaHeader.decode(raw, 8346)
    assert header.s_magic == header.s_magic2 == blob.BLOB_META_MAGIC
    assert (header.s_ci_entries, header.s_ci_offset, header.s_ci_uncompressed_size) == (2, 8314, 32)
    assert blob.decode_ci_v1(raw, 8314) == (0, 4828, 0, 16931)
    assert blob.decode_ci_v1(raw, 8330) == (4828, 2974, 0x5000, 13400)


def test_v6_22_blob_is_not_a_bootstrap():
    with pytest.raises(FormatError) as e:
        open_image(fixture_path(f"blobs/{V6_BLOB}"))
    assert V6_BLOB in str(e.value) and "image.boot" in str(e.value)


# --- acceleration-service: one image built as v5 and as v6 -----------------------------------

def test_accel_v6_header_and_tables():
    with open_image(fixture_path("acceleration-service/v6-image-raw-size-438272.boot")) as im:
        sb, ext = im.sb, im.ext
        assert (sb.inos, sb.blocks, sb.meta_blkaddr) == (3517, 4096, 2)
        assert ext.s_flags == 0x6 and ext.s_chunk_size == 0x100000
        assert (ext.s_blob_table_offset, ext.s_blob_table_size) == (4096, 256)
        assert (ext.s_prefetch_table_offset, ext.s_prefetch_table_size) == (4352, 4)
        assert (ext.s_chunk_table_offset, ext.s_chunk_table_size) == (438272, 201200)
        assert len(list(im.chunk_table())) == 2515 == 201200 // 80
        assert im.devices[0].tag.decode() == ACCEL_V6_BLOB and im.devices[0].blocks == 20451
        assert [b.blob_id for b in im.blobs] == [ACCEL_V6_BLOB]
        assert (im.compressor, im.digester) == ("lz4_block", "blake3")
        assert len(list(im.walk())) == 3517
        assert [p for p, i in im.walk() if i in im.prefetch] == [b"/bin"]


def test_accel_v6_raw_bootstrap_digest():
    """Test_GetRawBootstrapFromV6: the bytes before the chunk table, found via the u64 at 1176."""
    raw = fixture_path("acceleration-service/v6-image-raw-size-438272.boot").read_bytes()
    assert is_v6_bootstrap(raw[:1028])
    (end,) = struct.unpack_from("<Q", raw, 1024 + 128 + 24)
    assert end == 438272
    with open_image(fixture_path("acceleration-service/v6-image-raw-size-438272.boot")) as im:
        assert im.ext.s_chunk_table_offset == end
    assert hashlib.sha256(raw[:end]).hexdigest() == (
        "38a117a42ebfa06b59b6bbd34c023f1b5980eec5387d4cea6b5b7571d5d5b844")


def test_accel_v5_header_and_tables():
    raw = fixture_path("acceleration-service/v5-image.boot").read_bytes()
    assert not is_v6_bootstrap(raw[:1028])  # GetRawBootstrapFromV6 must refuse it
    with open_image(fixture_path("acceleration-service/v5-image.boot")) as im:
        sb = im.sb
        assert sb.s_flags == 0x16
        assert (sb.s_inodes_count, sb.s_inode_table_entries, sb.s_prefetch_table_entries) == (3515, 3517, 1)
        assert sb.s_blob_table_offset == 22272
        assert [b.raw_id for b in im.blobs] == [ACCEL_V5_BLOB]
        e = im.ext_blob_entries[0]
        assert (e.chunk_count, e.uncompressed_size, e.compressed_size) == (2515, 77298891, 43090887)
        used = {(c.blob_index, c.index) for _, ino in im.walk() for c in im.chunks(ino)}
        assert len(used) == e.chunk_count and max(i for _, i in used) == e.chunk_count - 1
        assert im.prefetch == [1]


def test_accel_v5_and_v6_describe_the_same_tree():
    with open_image(fixture_path("acceleration-service/v5-image.boot")) as a, \
            open_image(fixture_path("acceleration-service/v6-image-raw-size-438272.boot")) as b:
        pa, pb = dict(a.walk()), dict(b.walk())
        assert pa.keys() == pb.keys() and len(pa) == 3517
        kinds = {}
        for path in pa:
            x, y = a.inode(pa[path]), b.inode(pb[path])
            assert (x.mode, x.uid, x.gid, x.nlink, x.mtime, x.mtime_nsec) == (
                y.mode, y.uid, y.gid, y.nlink, y.mtime, y.mtime_nsec), path
            if x.is_reg:
                assert x.size == y.size
                assert [c.block_id for c in a.chunks(pa[path])] == [c.block_id for c in b.chunks(pb[path])]
            if x.is_symlink:
                assert a.readlink(pa[path]) == b.readlink(pb[path])
            kinds[a.kind(pa[path])] = kinds.get(a.kind(pa[path]), 0) + 1
        assert kinds == {"dir": 678, "file": 2627, "symlink": 212}
        # hard links: one v5 inode number per group; the 2022 v6 builder wrote separate inodes
        # sharing i_ino, which link_key groups
        groups_a, groups_b = {}, {}
        for path in pa:
            if a.inode(pa[path]).is_reg:
                groups_a.setdefault(pa[path], []).append(path)
                groups_b.setdefault(b.link_key(pb[path]), []).append(path)
        multi_a = sorted(v for v in groups_a.values() if len(v) > 1)
        multi_b = sorted(v for v in groups_b.values() if len(v) > 1)
        assert multi_a == multi_b == [[b"/usr/bin/gunzip", b"/usr/bin/uncompress"],
                                      [b"/usr/bin/perl", b"/usr/bin/perl5.34.0"]]
        assert len({pb[p] for g in multi_b for p in g}) == 4  # four distinct nids


# --- the 2020 daemon-test bootstrap -------------------------------------------------------------

def test_legacy_bootstrap_is_refused_clearly():
    path = fixture_path("bootstrap/nydusd_daemon_test_bootstrap")
    with pytest.raises(UnsupportedError) as e:
        open_image(path)
    msg = str(e.value)
    assert "unsupported legacy layout" in msg and str(path) in msg
    assert e.value.structure == "RAFS v5 root inode" and e.value.offset is not None


def test_legacy_bootstrap_superblock_and_tables_decode():
    raw = fixture_path("bootstrap/nydusd_daemon_test_bootstrap").read_bytes()
    sb = v5.V5SuperBlock.decode(raw)
    assert (sb.s_sb_size, sb.s_block_size, sb.s_flags) == (8192, 0x100000, SuperFlags.COMPRESSION_NONE)
    assert (sb.s_inodes_count, sb.s_inode_table_offset, sb.s_inode_table_entries) == (16816, 8192, 16832)
    assert sb.s_prefetch_table_entries == 0
    assert (sb.s_blob_table_offset, sb.s_blob_table_size) == (75520, 72)
    assert sb.s_extended_blob_table_entries == 0 and sb.s_extended_blob_table_offset == 0
    entries = v5.decode_blob_table(raw, sb.s_blob_table_offset, sb.s_blob_table_size)
    assert entries == [(0, 0, LEGACY_BLOB.encode())]
    # what does decode encodes back to the same bytes
    assert sb.encode() == raw[:8192]
    assert v5.encode_blob_table(entries) == raw[75520:75520 + 72]
    from nydusfs.format.record import encode_u32_array, u32_array
    slots = u32_array(raw, 8192, sb.s_inode_table_entries, "inode table")
    assert encode_u32_array(slots, 8) == raw[8192:8192 + 4 * 16832]


# --- zran blob meta -------------------------------------------------------------------------------

def test_zran_blob_meta_header_and_chunk_infos():
    raw = fixture_path(
        "zran/233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta").read_bytes()
    assert len(raw) == 0xA2000 + 0x1000
    h = blob.BlobMetaHeader.decode(raw, len(raw) - 4096)
    assert h.s_magic == h.s_magic2 == blob.BLOB_META_MAGIC
    assert h.s_features == (BlobFeatures.ALIGNED | BlobFeatures.INLINED_FS_META
                            | BlobFeatures.CHUNK_INFO_V2 | BlobFeatures.ZRAN)
    assert (h.s_ci_entries, h.s_ci_compressor, h.s_ci_offset) == (0xA3, 0, 0)
    assert h.s_ci_compressed_size == h.s_ci_uncompressed_size == 0xA1290
    assert h.s_ci_zran_count == 0x15
    # zran dictionary table: everything after the 21 contexts of 40 bytes
    assert h.s_ci_zran_size - 21 * 40 == 655360
    assert h.encode() == raw[-4096:]
    uncompressed_end = 0
    for i in range(163):
        entry = blob.decode_ci_v2(raw, 24 * i)
        coff, csize, uoff, usize, flags = entry
        assert flags & 0x2  # zran
        assert uoff % 4096 == 0 and uoff >= uncompressed_end
        uncompressed_end = uoff + usize
        (data,) = struct.unpack_from("<Q", raw, 24 * i + 16)
        assert data >> 32 < 21  # zran context index
        assert blob.encode_ci_v2(*entry, data=data) == raw[24 * i:24 * i + 24]
    assert uncompressed_end <= 0x16C6000
