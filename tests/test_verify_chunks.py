"""Every way a chunk record can lie is caught by `dump --verify`, `check` and the mount.

A real layer tar is converted by `nydusfs create` (RAFS v5 and v6, zstd and uncompressed
blobs); then, in the bootstrap it wrote, the chunk records of one file per lie are edited by
hand: digests, file offsets, compressed and uncompressed offsets and sizes, blob indexes,
compression flags. The three verifiers run on the edited image and each must name every
edited file, while the one untouched file still verifies and reads right.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import pathlib
import random
import struct
import tarfile
from collections.abc import Callable

import pytest
from conftest import needs_root
from mount_helpers import nydusfs

from nydusfs.errors import BlobError
from nydusfs.format.flags import ChunkFlags
from nydusfs.format.record import align
from nydusfs.format.v5 import ChunkInfo
from nydusfs.format.v6 import ChunkAddr
from nydusfs.reader import open_image
from nydusfs.reader.chunkmap import NoDigestChunk

CHUNK = 0x1000
COMPRESSED = int(ChunkFlags.COMPRESSED)


def content(seed: int) -> bytes:
    """Two compressible chunks, one incompressible (stored raw), a short compressible tail."""
    r = random.Random(seed)

    def half() -> bytes:
        return r.randbytes(CHUNK // 4) + bytes(3 * CHUNK // 4)

    return half() + half() + r.randbytes(CHUNK) + r.randbytes(250) + bytes(750)


@dataclasses.dataclass
class Rec:
    """One chunk record of a file: where it sits in the bootstrap, what it says."""

    pos: int
    info: ChunkInfo
    addr: int | None = None     # RAFS v6: where the inode's chunk index for it sits


Edit = Callable[["Editor", list[Rec]], None]


class Editor:
    def __init__(self, boot: bytearray, blob: bytearray) -> None:
        self.boot = boot
        self.blob = blob

    def set(self, rec: Rec, field: str, value: object) -> None:
        fmt = {"block_id": "32s", "compressed_offset": "Q", "uncompressed_offset": "Q",
               "file_offset": "Q"}.get(field, "I")
        struct.pack_into("<" + fmt, self.boot, rec.pos + ChunkInfo.field_offset(field), value)


# name -> (versions, compressors, edit); each edit changes the records of its own file only
LIES: dict[str, tuple[tuple[int, ...], tuple[str, ...], Edit]] = {
    "digest-zeroed": ((5, 6), ("zstd", "none"),
                      lambda e, r: e.set(r[0], "block_id", bytes(32))),
    "digest-zeroed-bytes-flipped": ((5, 6), ("zstd", "none"), lambda e, r: (
        e.set(r[2], "block_id", bytes(32)), _flip(e, r[2]))),
    "digest-of-other-chunk": ((5, 6), ("zstd", "none"),
                              lambda e, r: e.set(r[0], "block_id", r[1].info.block_id)),
    "same-range-other-digest": ((5, 6), ("zstd", "none"), lambda e, r: (
        e.set(r[1], "compressed_offset", r[0].info.compressed_offset),
        e.set(r[1], "compressed_size", r[0].info.compressed_size),
        e.set(r[1], "flags", r[0].info.flags))),
    "compressed-offset-shifted": ((5, 6), ("zstd", "none"),
                                  lambda e, r: e.set(r[1], "compressed_offset", r[1].info.compressed_offset + 1)),
    "compressed-offset-past-blob": ((5, 6), ("zstd", "none"),
                                    lambda e, r: e.set(r[1], "compressed_offset", 1 << 40)),
    "compressed-size-short": ((5, 6), ("zstd", "none"),
                              lambda e, r: e.set(r[1], "compressed_size", r[1].info.compressed_size - 1)),
    "compressed-size-huge": ((5, 6), ("zstd", "none"),
                             lambda e, r: e.set(r[1], "compressed_size", 1 << 30)),
    "uncompressed-offset-past-blob": ((5, 6), ("zstd", "none"),
                                      lambda e, r: e.set(r[1], "uncompressed_offset", 1 << 40)),
    "uncompressed-offset-overlap": ((5, 6), ("zstd", "none"),
                                    lambda e, r: e.set(r[1], "uncompressed_offset", r[0].info.uncompressed_offset)),
    "uncompressed-offset-into-next-chunk": ((5, 6), ("zstd", "none"), lambda e, r: e.set(
        r[1], "uncompressed_offset", r[2].info.uncompressed_offset)),
    "chunk-indexes-swapped": ((6,), ("zstd", "none"), lambda e, r: _swap_indexes(e, r[0], r[1])),
    "uncompressed-size-short": ((5, 6), ("zstd", "none"),
                                lambda e, r: e.set(r[0], "uncompressed_size", CHUNK - 1)),
    "uncompressed-size-long": ((5, 6), ("zstd", "none"),
                               lambda e, r: e.set(r[3], "uncompressed_size", r[3].info.uncompressed_size + 1)),
    "blob-index": ((5, 6), ("zstd", "none"), lambda e, r: e.set(r[0], "blob_index", 1)),
    "compressed-flag-cleared": ((5, 6), ("zstd",),
                                lambda e, r: e.set(r[0], "flags", r[0].info.flags & ~COMPRESSED)),
    "compressed-flag-on-raw-chunk": ((5, 6), ("zstd", "none"),
                                     lambda e, r: e.set(r[2], "flags", r[2].info.flags | COMPRESSED)),
    "file-offsets-swapped": ((5,), ("zstd", "none"), lambda e, r: (
        e.set(r[0], "file_offset", r[1].info.file_offset),
        e.set(r[1], "file_offset", r[0].info.file_offset))),
    "file-offsets-overlap": ((5,), ("zstd", "none"),
                             lambda e, r: e.set(r[1], "file_offset", CHUNK // 2)),
    "file-offset-hole": ((5,), ("zstd", "none"), lambda e, r: (
        e.set(r[3], "file_offset", r[3].info.file_offset + 8),
        e.set(r[3], "uncompressed_size", r[3].info.uncompressed_size - 8))),
    "index-of-other-chunk": ((5,), ("zstd", "none"), lambda e, r: e.set(r[1], "index", r[0].info.index)),
}


def _swap_indexes(e: Editor, a: Rec, b: Rec) -> None:
    """Swap which chunks two slots of a RAFS v6 inode name (advise and device_id), leaving
    their block addresses."""
    assert a.addr is not None and b.addr is not None
    x, y = e.boot[a.addr:a.addr + 4], e.boot[b.addr:b.addr + 4]
    e.boot[a.addr:a.addr + 4], e.boot[b.addr:b.addr + 4] = y, x


def _flip(e: Editor, rec: Rec) -> None:
    e.blob[rec.info.compressed_offset + 7] ^= 0x40


def lies_for(version: int, compressor: str) -> list[str]:
    return [n for n, (vs, cs, _) in LIES.items() if version in vs and compressor in cs]


def layer_tar(path: pathlib.Path, names: list[str]) -> dict[str, bytes]:
    files = {name: content(i) for i, name in enumerate(names)}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1_700_000_000, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return files


def records(boot: str, blob_dir: pathlib.Path, path: str) -> list[Rec]:
    """The chunk records of file `path` as they sit in the bootstrap."""
    with open_image(boot, [blob_dir]) as im:
        ino = im.resolve(path)
        node = im.inode(ino)
        chunks = im.chunks(ino)
        if im.version == 5:
            _, pos = im._xattr_span(node.offset, node.record)
            return [Rec(pos + i * 80, c) for i, c in enumerate(chunks)]
        table = im._table()
        addrs = align(im._body(node), 8)
        return [Rec(table.get(c.blob_index, c.index), c, addrs + 8 * i) for i, c in enumerate(chunks)]


@dataclasses.dataclass
class Lied:
    boot: pathlib.Path
    blob_dir: pathlib.Path
    tar: pathlib.Path
    files: dict[str, bytes]
    lies: list[str]


def convert(tmp: pathlib.Path, version: int, compressor: str, names: list[str]) -> Lied:
    """A layer of the file "clean" and one file per name, converted by `nydusfs create`."""
    tar = tmp / "layer.tar"
    files = layer_tar(tar, ["clean"] + names)
    boot, blob_dir = tmp / "image.boot", tmp / "blobs"
    done = nydusfs("create", tar, "--bootstrap", boot, "--blob-dir", blob_dir, "--fs-version",
                   version, "--compressor", compressor, "--chunk-size", hex(CHUNK), "-q")
    assert done.returncode == 0, done.stderr
    # the untouched image verifies: what fails later fails because of the edits
    assert nydusfs("dump", boot, "--blob-dir", blob_dir, "--verify").returncode == 0
    return Lied(boot, blob_dir, tar, files, names)


def build(tmp: pathlib.Path, version: int, compressor: str, lies: list[str]) -> Lied:
    lied = convert(tmp, version, compressor, lies)
    boot, blob_dir = lied.boot, lied.blob_dir
    (blob_path,) = blob_dir.iterdir()
    plan = {name: records(str(boot), blob_dir, "/" + name) for name in lies}
    for name, recs in plan.items():
        assert len(recs) == 4 and recs[2].info.flags & COMPRESSED == 0, (name, recs)
        if compressor == "zstd":
            assert recs[0].info.flags & COMPRESSED, recs
    editor = Editor(bytearray(boot.read_bytes()), bytearray(blob_path.read_bytes()))
    for name, recs in plan.items():
        LIES[name][2](editor, recs)
    boot.write_bytes(editor.boot)
    blob_path.write_bytes(editor.blob)
    return lied


VARIANTS = [(5, "zstd"), (6, "zstd"), (5, "none"), (6, "none")]


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"v{v}-{c}" for v, c in VARIANTS])
def lied(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lied:
    version, compressor = request.param
    tmp = tmp_path_factory.mktemp(f"lied-v{version}-{compressor}")
    return build(tmp, version, compressor, lies_for(version, compressor))


def test_dump_verify_names_every_lie(lied: Lied) -> None:
    done = nydusfs("dump", lied.boot, "--blob-dir", lied.blob_dir, "--verify", "--json", "--no-chunks")
    assert done.returncode == 1, done.stderr
    failures = json.loads(done.stdout)["verify"]["failures"]
    named = {f["path"] for f in failures}
    assert {"/" + n for n in lied.lies} <= named, sorted({"/" + n for n in lied.lies} - named)
    assert all(f["error"] for f in failures)


def test_check_names_every_lie(lied: Lied, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "check.json"
    done = nydusfs("check", lied.boot, "--blob-dir", lied.blob_dir, "--layers", lied.tar,
                   "--json", out)
    assert done.returncode == 1, done.stderr
    diffs = json.loads(out.read_text())["differences"]
    named = {d["path"] for d in diffs if d["field"] in ("content", "chunks")}
    assert {"/" + n for n in lied.lies} <= named, sorted({"/" + n for n in lied.lies} - named)
    # the untouched file reads and matches
    assert not [d for d in diffs if d["path"] == "/clean" and d["field"] == "content"]


REFUSED_FILE = r"ERROR read\(\d+, \d+\): .*: (RAFS chunk map of inode \d+|RAFS v6 chunk table) "
BAD_CHUNK = r"ERROR read: inode \d+: blob [0-9a-f]{64} chunk \d+ at offset \d+: "


@needs_root
def test_mount_refuses_every_lie(lied: Lied, mounts) -> None:
    mounts.expect_log(REFUSED_FILE)     # each refusal is logged (once: see below)
    mounts.expect_log(BAD_CHUNK)
    m = mounts.mount(lied.boot, "--blob-dir", lied.blob_dir)
    assert (m.path / "clean").read_bytes() == lied.files["clean"]
    served = []
    for name in lied.lies:
        try:
            data = (m.path / name).read_bytes()
        except OSError as e:
            assert e.errno == errno.EIO, (name, e)
            continue
        served.append((name, data == lied.files[name]))
    assert not served, served
    # a refused file is logged once, however often it is read
    if "uncompressed-size-short" in lied.lies:
        with pytest.raises(OSError):
            (m.path / "uncompressed-size-short").read_bytes()
        log = m.wait_log("uncompressed_size 4095")
        assert log.count("uncompressed_size 4095") == 1, log


@needs_root
def test_check_through_mount_names_every_lie(tmp_path: pathlib.Path) -> None:
    lied = build(tmp_path, 5, "zstd", lies_for(5, "zstd"))
    out = tmp_path / "check.json"
    done = nydusfs("check", lied.boot, "--blob-dir", lied.blob_dir, "--layers", lied.tar,
                   "--through-mount", "--json", out)
    assert done.returncode == 1, done.stderr
    diffs = json.loads(out.read_text())["differences"]
    unreadable = {d["path"] for d in diffs if d["field"] == "content"}
    assert {"/" + n for n in lied.lies} <= unreadable, sorted({"/" + n for n in lied.lies} - unreadable)
    assert "/clean" not in unreadable
    assert {d["path"] for d in diffs if d["field"] == "chunks"} <= {"/" + n for n in lied.lies}


@needs_root
def test_no_verify_skips_only_digests(tmp_path: pathlib.Path, mounts) -> None:
    lied = build(tmp_path, 6, "zstd", ["digest-zeroed", "uncompressed-size-short"])
    mounts.expect_log(REFUSED_FILE + ".*uncompressed_size 4095")
    mounts.expect_log(BAD_CHUNK + "blake3 digest mismatch")
    m = mounts.mount(lied.boot, "--blob-dir", lied.blob_dir, "--no-verify")
    # the bytes are right, only the digest lies: nydusd's behaviour serves them
    assert (m.path / "digest-zeroed").read_bytes() == lied.files["digest-zeroed"]
    with pytest.raises(OSError) as e:
        (m.path / "uncompressed-size-short").read_bytes()
    assert e.value.errno == errno.EIO
    # the old switch is accepted and verification stays on
    m2 = mounts.mount(lied.boot, "--blob-dir", lied.blob_dir, "--verify-chunks")
    with pytest.raises(OSError) as e:
        (m2.path / "digest-zeroed").read_bytes()
    assert e.value.errno == errno.EIO
    assert (m2.path / "clean").read_bytes() == lied.files["clean"]


def test_chunk_cache_keys_on_identity(tmp_path: pathlib.Path) -> None:
    """Two records of one compressed range with different digests are two cache entries: the
    first one read never answers for the second."""
    lied = build(tmp_path, 5, "zstd", [])
    with open_image(lied.boot, [lied.blob_dir]) as im:
        first = im.chunks(im.resolve("/clean"))[0]
        other = first.replace(block_id=bytes(32))
        assert im.blob_store.chunk_data(first) == lied.files["clean"][:CHUNK]
        with pytest.raises(BlobError, match="digest mismatch"):
            im.blob_store.chunk_data(other)
        # unverified reads may share the entry of the same identity, never another's
        assert im.blob_store.chunk_data(other, verify=False) == lied.files["clean"][:CHUNK]
        with pytest.raises(BlobError, match="digest mismatch"):
            im.blob_store.chunk_data(other)


def test_v6_chunk_index_naming_another_blob(tmp_path: pathlib.Path) -> None:
    """The other blob index of RAFS v6, in the inode's chunk index array."""
    lied = build(tmp_path, 6, "zstd", [])
    with open_image(lied.boot, [lied.blob_dir]) as im:
        ino = im.resolve("/clean")
        pos = align(im._body(im.inode(ino)), 8)
    raw = bytearray(lied.boot.read_bytes())
    addr = ChunkAddr.decode(raw, pos)
    raw[pos:pos + 8] = addr.replace(device_id=(addr.device_id & 0xFF00) | 3).encode()
    lied.boot.write_bytes(raw)
    done = nydusfs("dump", lied.boot, "--blob-dir", lied.blob_dir, "--verify", "--json", "--no-chunks")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert "/clean" in {f["path"] for f in doc["verify"]["failures"]}
    assert "blob index" in next(n["chunks_error"] for n in doc["inodes"] if n["path"] == "/clean")
    # without --verify the listing cannot show the file's chunks: an error, one line
    done = nydusfs("dump", lied.boot, "--json")
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1, done.stderr
    out = tmp_path / "check.json"
    done = nydusfs("check", lied.boot, "--blob-dir", lied.blob_dir, "--layers", lied.tar, "--json", out)
    assert done.returncode == 1, done.stderr
    assert "/clean" in {d["path"] for d in json.loads(out.read_text())["differences"]}


def test_zeroed_digest_is_not_no_digest(tmp_path: pathlib.Path) -> None:
    """A zeroed digest is compared like any other; a chunk that records no digest at all
    (blob meta without a digest array) cannot be verified and fails too."""
    lied = build(tmp_path, 6, "none", [])
    with open_image(lied.boot, [lied.blob_dir]) as im:
        c = im.chunks(im.resolve("/clean"))[0]
        zeroed = c.replace(block_id=bytes(32))
        with pytest.raises(BlobError, match="digest mismatch"):
            im.blob_store.load_chunk(zeroed)
        bare = NoDigestChunk(*zeroed.as_dict().values())
        with pytest.raises(BlobError, match="records no digest"):
            im.blob_store.load_chunk(bare)
        assert im.blob_store.load_chunk(bare, verify=False) == lied.files["clean"][:CHUNK]
