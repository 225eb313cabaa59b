"""Round trips of every fixed-size record and of the variable-length codecs (hypothesis)."""

from __future__ import annotations

import dataclasses
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nydusfs.errors import FormatError
from nydusfs.format import blob, record, v5, v6
from nydusfs.format.blob import BlobMetaHeader, TocEntry
from nydusfs.format.v5 import ChunkInfo, V5ExtBlobEntry, V5Inode, V5SuperBlock
from nydusfs.format.v6 import (
    ChunkAddr,
    DeviceSlot,
    Dirent,
    ErofsSuperBlock,
    InodeCompact,
    InodeExtended,
    V6BlobEntry,
    V6SuperBlockExt,
    XattrIbodyHeader,
)
from nydusfs.reader.model import (
    MARK_IMPLICIT_DIR,
    decode_mark,
    dev_from_disk,
    dev_to_disk,
    encode_mark,
)

RECORDS = [V5SuperBlock, V5Inode, ChunkInfo, V5ExtBlobEntry, ErofsSuperBlock, V6SuperBlockExt,
           DeviceSlot, V6BlobEntry, InodeCompact, InodeExtended, Dirent, ChunkAddr,
           XattrIbodyHeader, BlobMetaHeader, TocEntry]

SETTINGS = settings(max_examples=150, deadline=None)


def field_codes(cls: type[record.Record]) -> list[str]:
    """One struct code per field ("I", "Q", "32s"...), from the record's format."""
    codes: list[str] = []
    for count, code in record._CODE.findall(cls.FORMAT[1:]):
        codes.extend([f"{count or 1}s"] if code == "s" else [code] * int(count or 1))
    return codes


def field_strategies(cls: type[record.Record]) -> list[st.SearchStrategy]:
    out: list[st.SearchStrategy] = []
    for code in field_codes(cls):
        size = struct.calcsize("<" + code)
        if code.endswith("s"):
            out.append(st.binary(min_size=size, max_size=size) if size <= 64 else record_bytes(size))
        else:
            out.append(st.integers(0, (1 << (8 * size)) - 1))
    return out


def record_bytes(size: int) -> st.SearchStrategy[bytes]:
    """Arbitrary record-sized bytes: random filler with zeroed and 0xff runs (small to shrink)."""

    def build(seed: int, runs: list[tuple[int, int, int]]) -> bytes:
        raw = bytearray(random.Random(seed).randbytes(size))
        for start, length, fill in runs:
            raw[start:start + length] = bytes([fill]) * len(raw[start:start + length])
        return bytes(raw)

    run = st.tuples(st.integers(0, size - 1), st.integers(0, size), st.sampled_from([0, 0xFF]))
    return st.builds(build, st.integers(0, 1 << 32), st.lists(run, max_size=4))


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_record_sizes_match_the_spec(cls):
    expected = {"V5SuperBlock": 8192, "V5Inode": 128, "ChunkInfo": 80, "V5ExtBlobEntry": 64,
                "ErofsSuperBlock": 128, "V6SuperBlockExt": 256, "DeviceSlot": 128,
                "V6BlobEntry": 256, "InodeCompact": 32, "InodeExtended": 64, "Dirent": 12,
                "ChunkAddr": 8, "XattrIbodyHeader": 12, "BlobMetaHeader": 4096, "TocEntry": 128}
    assert cls.SIZE == expected[cls.__name__]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_any_bytes_decode_and_encode_back(cls):
    """Every byte of a record, reserved areas included, survives decode -> encode."""

    @SETTINGS
    @given(raw=record_bytes(cls.SIZE), pad=st.integers(0, 40))
    def check(raw, pad):
        buf = bytes(pad) + raw + b"\xa5" * 3
        rec = cls.decode(buf, pad)
        assert rec.encode() == raw
        assert cls.decode(rec.encode()) == rec

    check()


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_fields_encode_and_decode_back(cls):
    @SETTINGS
    @given(st.tuples(*field_strategies(cls)))
    def check(values):
        rec = cls(*values)
        raw = rec.encode()
        assert len(raw) == cls.SIZE
        assert cls.decode(raw) == rec
        for name, code, value in zip(rec.as_dict(), field_codes(cls), values, strict=True):
            # each field sits at its documented offset, little-endian
            assert struct.unpack_from("<" + code, raw, cls.field_offset(name))[0] == value

    check()


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_short_buffer_is_a_format_error_naming_the_structure(cls):
    with pytest.raises(FormatError) as e:
        cls.decode(bytes(cls.SIZE + 10), 11)
    # the last field is the one cut short; the error points at it
    last = list(cls._names)[-1]
    assert (e.value.structure, e.value.field) == (cls.STRUCTURE, last)
    assert e.value.offset == 11 + cls.field_offset(last)
    assert cls.STRUCTURE in str(e.value) and f"field {last}" in str(e.value)
    assert f"{cls.SIZE} bytes from offset 11" in str(e.value)
    with pytest.raises(FormatError) as e:
        cls.decode(bytes(cls.SIZE), -1)
    assert e.value.field == next(iter(cls._names))


# --- RAFS v5 variable-length parts ------------------------------------------------------------

blob_ids = st.binary(min_size=1, max_size=80).filter(lambda b: b"\0" not in b)
u32 = st.integers(0, 0xFFFF_FFFF)


@SETTINGS
@given(st.lists(st.tuples(u32, u32, blob_ids), max_size=6), st.integers(0, 64))
def test_v5_blob_table_round_trip(entries, at):
    raw = v5.encode_blob_table(entries)
    assert len(raw) % 8 == 0
    if entries:  # separators only between entries: unpadded size is sum(8 + id) + n - 1
        assert len(raw) == record.align(sum(8 + len(i) for _, _, i in entries) + len(entries) - 1, 8)
    buf = bytes(at) + raw + b"\xff" * 5
    assert v5.decode_blob_table(buf, at, len(raw)) == entries


def test_v5_blob_table_past_the_end_is_a_format_error():
    raw = v5.encode_blob_table([(0, 0, b"a" * 64)])
    with pytest.raises(FormatError) as e:
        v5.decode_blob_table(raw, 8, len(raw))
    assert e.value.offset == 8 and "blob table" in str(e.value)


xattr_names_v5 = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)


@SETTINGS
@given(st.lists(st.tuples(xattr_names_v5, st.binary(max_size=100)), max_size=8), st.integers(0, 3))
def test_v5_xattrs_round_trip(pairs, words):
    raw = v5.encode_xattrs(pairs)
    assert len(raw) % 8 == 0
    at = 8 * words
    pairs_back, size = v5.decode_xattrs(bytes(at) + raw + bytes(16), at)
    assert pairs_back == pairs
    assert size == len(raw)
    assert v5.xattr_payload_size(pairs) == struct.unpack_from("<Q", raw)[0]


@SETTINGS
@given(st.binary(min_size=8, max_size=64))
def test_v5_xattrs_garbage_is_a_format_error_or_decodes(raw):
    try:
        pairs, size = v5.decode_xattrs(raw, 0)
    except FormatError as e:
        assert e.structure == "RAFS v5 xattr table" and e.offset is not None
    else:
        assert 8 <= size <= record.align(len(raw), 8)
        assert all(name and b"\0" not in name for name, _ in pairs)


def v6_xattr_name() -> st.SearchStrategy[bytes]:
    suffix = st.binary(min_size=1, max_size=30)
    return st.one_of(
        st.sampled_from([b"system.posix_acl_access", b"system.posix_acl_default"]),
        st.builds(lambda p, s: p + s, st.sampled_from([b"user.", b"trusted.", b"security."]), suffix))


@SETTINGS
@given(st.dictionaries(v6_xattr_name(), st.binary(max_size=300), max_size=8), st.integers(0, 8))
def test_v6_xattrs_round_trip(pairs_dict, words):
    pairs = sorted(pairs_dict.items())
    area = v6.encode_xattrs(pairs)
    icount = v6.xattr_icount(area)
    assert len(area) == v6.xattr_area_size(icount)
    at = 4 * words
    buf = bytes(at) + area + b"\xee" * 7
    assert (v6.decode_xattrs(buf, at, icount) if pairs else []) == pairs
    if pairs:
        header, entries = v6.decode_xattr_area(buf, at, icount)
        assert v6.encode_xattr_area(header, entries) == area
        for (name, value), (index, suffix, value2) in zip(pairs, entries, strict=True):
            assert v6.XATTR_PREFIXES[index] + suffix == name and value2 == value
            assert v6.split_xattr_name(name) == (index, suffix)


@pytest.mark.parametrize("name", [b"", b"user.", b"other.x", b"system.posix_acl_accessX"])
def test_v6_xattr_names_without_an_erofs_prefix_are_refused(name):
    with pytest.raises(ValueError):
        v6.split_xattr_name(name)


def test_v6_xattr_unknown_name_index_is_a_format_error():
    area = bytearray(v6.encode_xattrs([(b"user.a", b"v")]))
    area[12 + 1] = 5  # e_name_index of the first entry
    with pytest.raises(FormatError) as e:
        v6.decode_xattrs(bytes(area), 0, v6.xattr_icount(bytes(area)))
    assert e.value.field == "e_name_index" and e.value.offset == 13 and e.value.found == 5


dirent_names = st.binary(min_size=1, max_size=255).filter(lambda b: b"\0" not in b and b not in (b".", b".."))


@SETTINGS
@given(st.lists(st.tuples(dirent_names, st.integers(0, (1 << 64) - 1), st.integers(0, 7)),
                max_size=60, unique_by=lambda t: t[0]),
       st.sampled_from([512, 4096]))
def test_v6_dirent_blocks_round_trip(entries, bs):
    entries = sorted([(b".", 1, v6.FT_DIR), (b"..", 1, v6.FT_DIR)] + entries)
    blocks = v6.encode_dir_blocks(entries, bs)
    assert all(len(b) == bs for b in blocks[:-1]) and 0 < len(blocks[-1]) <= bs
    decoded = []
    for i, block in enumerate(blocks):
        records = v6.decode_dir_records(block, i * bs)
        assert v6.encode_dir_records(records, len(block)) == block
        decoded.extend(v6.decode_dir_block(block, i * bs))
    assert decoded == entries


@SETTINGS
@given(st.binary(min_size=0, max_size=200))
def test_v6_dirent_garbage_is_a_format_error_or_decodes(raw):
    try:
        out = v6.decode_dir_block(raw, 4096)
    except FormatError as e:
        assert e.structure.startswith("EROFS d") and e.offset is not None and e.offset >= 4096
    else:
        assert out and all(name for name, _nid, _t in out)


# --- blob-level codecs ----------------------------------------------------------------------

@SETTINGS
@given(comp_off=st.integers(0, (1 << 40) - 1), comp_size=st.integers(1, 1 << 24),
       uncomp_block=st.integers(0, (1 << 32) - 1), uncomp_size=st.integers(1, 1 << 24))
def test_ci_v1_round_trip(comp_off, comp_size, uncomp_block, uncomp_size):
    raw = blob.encode_ci_v1(comp_off, comp_size, uncomp_block << 12, uncomp_size)
    assert len(raw) == 16
    assert blob.decode_ci_v1(raw, 0) == (comp_off, comp_size, uncomp_block << 12, uncomp_size)


@SETTINGS
@given(st.binary(min_size=16, max_size=16))
def test_ci_v1_any_entry_with_zero_reserved_bits_encodes_back(raw):
    raw = b"\0" + raw[1:]  # bits 0..7 of uncomp_info are reserved
    assert blob.encode_ci_v1(*blob.decode_ci_v1(raw, 0)) == raw


@SETTINGS
@given(comp_off=st.integers(0, (1 << 40) - 1), comp_size=st.integers(0, (1 << 24) - 1),
       uncomp_block=st.integers(0, (1 << 32) - 1), uncomp_size=st.integers(1, 1 << 24),
       flags=st.integers(0, 255), data=st.integers(0, (1 << 64) - 1))
def test_ci_v2_round_trip(comp_off, comp_size, uncomp_block, uncomp_size, flags, data):
    raw = blob.encode_ci_v2(comp_off, comp_size, uncomp_block << 12, uncomp_size, flags, data)
    assert len(raw) == 24
    assert blob.decode_ci_v2(raw, 0) == (comp_off, comp_size, uncomp_block << 12, uncomp_size, flags)
    assert struct.unpack_from("<Q", raw, 16)[0] == data


@SETTINGS
@given(st.binary(min_size=24, max_size=24))
def test_ci_v2_any_entry_encodes_back(raw):
    data = struct.unpack_from("<Q", raw, 16)[0]
    assert blob.encode_ci_v2(*blob.decode_ci_v2(raw, 0), data=data) == raw


@SETTINGS
@given(st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b),
       st.integers(0, 8 ** 11 - 1))
def test_in_blob_tar_header_round_trip(name, size):
    h = blob.blob_tar_header(name, size)
    assert len(h) == 512 and blob.tar_checksum_ok(h)
    assert blob.parse_blob_tar_header(h, 1000) == (name, size)


def test_in_blob_tar_header_with_a_bad_checksum_is_a_format_error():
    h = bytearray(blob.blob_tar_header(b"image.boot", 123))
    h[0] ^= 1
    with pytest.raises(FormatError) as e:
        blob.parse_blob_tar_header(bytes(h), 5000)
    assert e.value.field == "chksum" and e.value.offset == 5000 + 148


@SETTINGS
@given(st.binary(max_size=5000), st.sampled_from(sorted(blob.COMPRESSOR_IDS)),
       st.sampled_from(sorted(blob.DIGESTER_IDS)))
def test_chunk_compression_and_digest_round_trip(data, algo, digester):
    stored, compressed = blob.compress(data, algo)
    assert compressed == (stored != data) or (not compressed and stored == data)
    if compressed:
        assert len(stored) < len(data)
    out = blob.decompress(stored, algo, len(data)) if compressed else stored
    assert out == data
    assert len(blob.digest(out, digester)) == 32


@pytest.mark.parametrize("algo", ["zstd", "lz4_block", "gzip"])
def test_decompress_never_trusts_the_stream_about_the_size(algo):
    data = os.urandom(100) * 50
    stored, _ = blob.compress(data, algo)
    with pytest.raises(ValueError):
        blob.decompress(stored, algo, len(data) - 1)
    with pytest.raises(ValueError):
        blob.decompress(stored, algo, len(data) + 1)
    with pytest.raises(ValueError):
        blob.decompress(stored, algo, 1 << 40)  # never allocated


def test_zstd_frame_claiming_a_huge_size_is_refused_without_allocating():
    frame = bytearray(blob.compress(b"a" * 1000, "zstd")[0])
    # rewrite the frame header with an 8-byte content size of 1 TiB
    fhd_single_segment = frame[4] & 0x20
    assert fhd_single_segment
    size_len = {0: 1, 1: 2, 2: 4, 3: 8}[frame[4] >> 6]
    forged = frame[:4] + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + frame[5 + size_len:]
    with pytest.raises(ValueError):
        blob.decompress(bytes(forged), "zstd", 1000)


@SETTINGS
@given(st.lists(u32, max_size=50), st.integers(0, 9))
def test_u32_arrays_round_trip(values, at):
    raw = record.encode_u32_array(values, 8)
    assert len(raw) % 8 == 0
    assert record.u32_array(bytes(at) + raw, at, len(values), "t") == tuple(values)


def test_u32_array_past_the_end_is_a_format_error():
    with pytest.raises(FormatError) as e:
        record.u32_array(bytes(10), 4, 2, "RAFS v5 prefetch table")
    assert e.value.structure == "RAFS v5 prefetch table" and e.value.offset == 4


@SETTINGS
@given(blob_index=st.integers(0, 254), ci_index=st.integers(0, (1 << 24) - 1), blkaddr=u32)
def test_chunk_addr_packs_blob_and_ci_index(blob_index, ci_index, blkaddr):
    a = ChunkAddr.make(blob_index, ci_index, blkaddr)
    back = ChunkAddr.decode(a.encode())
    assert (back.blob_index, back.ci_index, back.blkaddr) == (blob_index, ci_index, blkaddr)


@SETTINGS
@given(major=st.integers(0, (1 << 12) - 1), minor=st.integers(0, (1 << 20) - 1))
def test_rdev_disk_encoding_round_trip(major, minor):
    dev = os.makedev(major, minor)
    disk = dev_to_disk(dev)
    assert disk < 1 << 32
    assert dev_from_disk(disk) == dev


def test_rdev_disk_encoding_matches_the_spec_examples():
    assert dev_to_disk(os.makedev(1, 3)) == 0x103
    assert dev_to_disk(os.makedev(1, 5)) == 0x105
    assert dev_from_disk(0x103) == os.makedev(1, 3)


@pytest.mark.parametrize("size", [8, 16])
def test_private_mark_round_trip(size):
    assert decode_mark(encode_mark(MARK_IMPLICIT_DIR, size)) == MARK_IMPLICIT_DIR
    assert encode_mark(0, size) == bytes(size)
    assert decode_mark(bytes(size)) == 0


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_decode_builds_what_the_constructor_builds(cls: type[record.Record]) -> None:
    """decode() builds records through the fast maker: the same class, fields, equality, hash,
    and still frozen."""
    raw = random.Random(cls.__name__).randbytes(cls.SIZE)
    fields = cls._struct.unpack_from(raw, 0)
    made, built = cls.decode(raw), cls(*fields)
    assert type(made) is cls
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert made.encode() == raw
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, cls._names[0], fields[0])


def test_inode_maker_builds_an_inode() -> None:
    from nydusfs.reader.model import Inode, make_inode

    rec = InodeCompact.decode(bytes(32))
    values = dict(ino=7, mode=0o100644, uid=1, gid=2, size=3, nlink=1, mtime=4, mtime_nsec=5,
                  rdev=0, implicit=False, offset=64, record=rec)
    made, built = make_inode(**values), Inode(**values)
    assert type(made) is Inode and made == built and hash(made) == hash(built)
    assert made.is_reg and not made.is_dir
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.size = 9  # type: ignore[misc]


def test_a_subclass_decodes_to_itself() -> None:
    from nydusfs.reader.chunkmap import NoDigestChunk

    raw = random.Random(1).randbytes(ChunkInfo.SIZE)
    assert type(NoDigestChunk.decode(raw)) is NoDigestChunk
    assert type(ChunkInfo.decode(raw)) is ChunkInfo
    assert NoDigestChunk.decode(raw) == NoDigestChunk(*ChunkInfo._struct.unpack_from(raw, 0))
