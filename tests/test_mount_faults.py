"""Faults while mounted: a missing, cut or corrupted blob, a damaged bootstrap entry, a handler
that raises. Reads of the affected files fail with EIO (logged once), the rest keeps working."""

from __future__ import annotations

import errno
import logging
import os
import pathlib

import pytest
import trio

from conftest import needs_root
from corpus import pattern
from mount_helpers import Built, ImageBuilder, Mounts

pytestmark = needs_root

CHUNK = 0x4000



def two_blob_image(tmp: pathlib.Path, version: int, compressor: str = "zstd") -> Built:
    """Files a* in blob 0, b* in blob 1, directories and symlinks need no blob at all."""
    b = ImageBuilder(version=version, compressor=compressor, chunk_size=CHUNK, blobs=2)
    for i in range(3):
        b.file(f"a/a{i}", pattern(3 * CHUNK + i, i), blob=0)
        b.file(f"b/b{i}", pattern(3 * CHUNK + i, 10 + i), blob=1)
    b.file("a/text", b"text\n" * 10000, blob=0)
    b.symlink("link", "a/a0")
    b.dir("empty")
    return b.build(tmp / "img")


def eio(path: pathlib.Path) -> bool:
    try:
        path.read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO, e
        return True
    return False


def data_of(built: Built, path: str):
    node = built.tree.lookup(path.encode())
    return node, built.data[id(node)]


def assert_alive_and_intact(built: Built, root: pathlib.Path, good: list[str]) -> None:
    assert sorted(os.listdir(root)) == ["a", "b", "empty", "link"]
    assert os.readlink(root / "link") == "a/a0"
    for p in good:
        assert (root / p).read_bytes() == data_of(built, "/" + p)[1], p


@pytest.mark.parametrize("version", [5, 6])
def test_missing_blob_fails_only_its_files(mounts: Mounts, tmp_path: pathlib.Path, version: int) -> None:
    built = two_blob_image(tmp_path, version)
    mounts.expect_log(rf"ERROR read: inode \d+: blob {built.tree.blobs[1].blob_id}: blob file not found")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    assert (m.path / "a" / "a1").read_bytes() == data_of(built, "/a/a1")[1]
    built.blob_files[1].unlink()          # before anything of blob 1 was read
    for i in range(3):
        assert eio(m.path / "b" / f"b{i}")
        assert eio(m.path / "b" / f"b{i}")
        assert os.stat(m.path / "b" / f"b{i}").st_size == 3 * CHUNK + i   # metadata still there
    assert_alive_and_intact(built, m.path, ["a/a0", "a/a1", "a/a2", "a/text"])
    blob_id = built.tree.blobs[1].blob_id
    log = m.log()
    assert log.count(blob_id) == 1, log   # six failed reads, one line


@pytest.mark.parametrize("version", [5, 6])
def test_cut_blob_fails_files_beyond_the_cut(mounts: Mounts, tmp_path: pathlib.Path, version: int) -> None:
    """Blob 0 is open already; cutting it short makes only the files past the cut unreadable."""
    built = two_blob_image(tmp_path, version, compressor="none")
    mounts.expect_log(r"ERROR read: inode \d+: blob \w+ chunk \d+ at offset \d+: expected \d+ bytes, "
                      r"the file has 0 there")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--cache-size", "0")
    assert (m.path / "a" / "a0").read_bytes() == data_of(built, "/a/a0")[1]
    a2, _ = data_of(built, "/a/a2")
    os.truncate(built.blob_files[0], a2.chunks[0].compressed_offset)
    assert eio(m.path / "a" / "a2")
    assert eio(m.path / "a" / "text")
    assert_alive_and_intact(built, m.path, ["a/a0", "a/a1", "b/b0", "b/b1", "b/b2"])


@pytest.mark.parametrize("version,compressor", [(5, "none"), (6, "zstd"), (6, "lz4_block")])
def test_flipped_byte_is_caught_by_verification(mounts: Mounts, tmp_path: pathlib.Path,
                                                version: int, compressor: str) -> None:
    built = two_blob_image(tmp_path, version, compressor)
    mounts.expect_log(r"ERROR read: inode \d+: blob \w+ chunk \d+ at offset \d+: blake3 digest mismatch")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--verify-chunks")
    node, _ = data_of(built, "/b/b1")
    bad = node.chunks[2]
    blob = built.blob_files[1]
    raw = bytearray(blob.read_bytes())
    raw[bad.compressed_offset + bad.compressed_size // 2] ^= 0x40
    blob.write_bytes(bytes(raw))
    assert eio(m.path / "b" / "b1")
    assert eio(m.path / "b" / "b1")
    assert_alive_and_intact(built, m.path, ["a/a0", "a/a1", "a/a2", "a/text", "b/b0", "b/b2"])
    log = m.log()
    lines = [line for line in log.splitlines() if f"chunk {bad.index}" in line]
    assert len(lines) == 1, log
    assert built.tree.blobs[1].blob_id in lines[0]


def test_broken_compressed_chunk_without_verification(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    """Without --verify-chunks a damaged zstd frame still cannot pass for data: EIO."""
    built = two_blob_image(tmp_path, 6, "zstd")
    mounts.expect_log(r"ERROR read: inode \d+: blob \w+ chunk \d+ at offset \d+: cannot decompress \(zstd\)")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    node, _ = data_of(built, "/a/text")
    assert node.chunks[0].flags & 1                       # stored compressed
    raw = bytearray(built.blob_files[0].read_bytes())
    raw[node.chunks[0].compressed_offset] ^= 0xFF         # the frame magic
    built.blob_files[0].write_bytes(bytes(raw))
    assert eio(m.path / "a" / "text")
    assert_alive_and_intact(built, m.path, ["a/a0", "a/a1", "a/a2", "b/b0"])


@pytest.mark.parametrize("version", [5, 6])
def test_damaged_chunk_record_fails_that_file_only(mounts: Mounts, tmp_path: pathlib.Path,
                                                   version: int) -> None:
    """A chunk record in the bootstrap that points at a blob that does not exist."""
    built = two_blob_image(tmp_path, version)
    node, _ = data_of(built, "/a/a1")
    record = node.chunks[1].encode()
    boot = bytearray(built.bootstrap.read_bytes())
    at = boot.find(record)
    assert at > 0 and boot.find(record, at + 1) < 0
    boot[at + 32:at + 36] = (99).to_bytes(4, "little")    # blob_index
    built.bootstrap.write_bytes(bytes(boot))
    mounts.expect_log(r"ERROR read.*: (RAFS chunk map of inode \d+ .*blob_index 99 is outside the "
                      r"blob table|RAFS v6 chunk table field index .*the chunk table has no such entry)")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    assert eio(m.path / "a" / "a1")
    assert_alive_and_intact(built, m.path, ["a/a0", "a/a2", "a/text", "b/b0", "b/b1", "b/b2"])


def test_unexpected_exception_in_a_handler_is_eio_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """No kernel needed: a bug in the reader must come back as EIO, never end the loop."""
    import pyfuse3

    from nydusfs.fuse.ops import Operations

    class Broken:
        flags = 0x10
        root_ino = 1
        prefetch: list[int] = []

        def inode(self, ino: int):
            raise ZeroDivisionError("a bug")

        def readlink(self, ino: int) -> bytes:
            raise KeyError(ino)

    ops = Operations(Broken())

    async def main() -> list[int]:
        codes = []
        for call in (ops.getattr(1), ops.readlink(1), ops.lookup(1, b"x"), ops.opendir(1)):
            try:
                await call
            except pyfuse3.FUSEError as e:
                codes.append(e.errno)
        return codes

    with caplog.at_level(logging.ERROR, logger="nydusfs.fuse"):
        assert trio.run(main) == [errno.EIO] * 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "getattr" in lines[0] and "ZeroDivisionError" in lines[0]
    assert "readlink" in lines[1] and "KeyError" in lines[1]
