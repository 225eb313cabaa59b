"""The repeatable RAFS v5 fixtures: tree and file md5s against upstream's `.result` listing,
inode and chunk digests, and the header facts the fixtures README records.

Four bootstraps describe the same tree: the two current ones (uncompressed blob 7334a259…)
and the two 2020 originals, one of which is the only lz4_block bootstrap + blob pair.
"""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from conftest import fixture_path
from nydusfs import dump as model
from nydusfs.format import blob
from nydusfs.format.flags import BlobFeatures, SuperFlags
from nydusfs.reader import open_image

BLOB_NONE = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
BLOB_LZ4 = "d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac"

BOOTSTRAPS = {
    "repeatable/sha256-nocompress-repeatable": (0x9, BLOB_NONE),
    "repeatable/blake3-lz4_block-non_repeatable": (0x5, BLOB_NONE),
    "historic/repeatable-2020/blake3-lz4_block-non_repeatable": (0x16, BLOB_LZ4),
    "historic/repeatable-2020/sha256-nocompress-repeatable": (0x9, BLOB_NONE),
}


def open_fixture(rel: str):
    return open_image(fixture_path(rel), [fixture_path("repeatable/blobs")])


def parse_result(path) -> tuple[list, dict, dict[str, str]]:
    """(tree JSON, report, {path: md5}) of a `tree -J` + `md5sum` listing."""
    text = path.read_text()
    end = text.index("\n]\n") + 3
    tree, report = json.loads(text[:end])
    md5s = {}
    for line in text[end:].splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            md5s[name] = digest
    return tree, report, md5s


def tree_entries(node: dict, prefix: str = "") -> dict[str, tuple[str, str | None]]:
    out = {}
    for child in node.get("contents", []):
        path = f"{prefix}/{child['name']}"
        out[path] = (child["type"], child.get("target"))
        if child["type"] == "directory":
            out.update(tree_entries(child, path))
    return out


def image_entries(im) -> dict[str, tuple[str, str | None]]:
    kinds = {"dir": "directory", "file": "file", "symlink": "link"}
    out = {}
    for path, ino in im.walk():
        if path == b"/":
            continue
        node = im.inode(ino)
        target = im.readlink(ino).decode() if node.is_symlink else None
        out[path.decode()] = (kinds[im.kind(ino)], target)
    return out


def follow(im, parent: list[str], target: str, depth: int = 0) -> list[str] | None:
    """Path components a symlink target leads to inside the image (absolute targets from its
    root, as in the mounted image), or None when it dangles."""
    parts = [] if target.startswith("/") else list(parent)
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            parts = parts[:-1]
            continue
        try:
            ino = im.resolve("/" + "/".join(parts + [comp]))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if im.inode(ino).is_symlink:
            if depth > 16:
                return None
            resolved = follow(im, parts, im.readlink(ino).decode(), depth + 1)
            if resolved is None:
                return None
            parts = resolved
        else:
            parts.append(comp)
    return parts


def resolves_to_dir(im, link_path: str) -> bool:
    """How `tree` counted a link when it listed the mounted image: as a directory if it
    leads to one."""
    parent = link_path.strip("/").split("/")[:-1]
    parts = follow(im, parent, im.readlink(im.resolve(link_path)).decode())
    return parts is not None and im.inode(im.resolve("/" + "/".join(parts))).is_dir


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_tree_matches_the_result_listing(rel):
    tree, report, _ = parse_result(fixture_path("repeatable/sha256-nocompress-repeatable.result"))
    with open_fixture(rel) as im:
        got = image_entries(im)
        assert got == tree_entries(tree)
        links = [p for p, (kind, _) in got.items() if kind == "link"]
        dir_links = [p for p in links if resolves_to_dir(im, p)]
        dirs = sum(1 for kind, _ in got.values() if kind == "directory")
        # `tree` counts links to directories as directories; the root is not counted
        assert report == {"type": "report", "directories": dirs + len(dir_links),
                          "files": len(got) - dirs - len(dir_links)}


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_every_file_read_through_the_reader_has_the_listed_md5(rel):
    _, _, md5s = parse_result(fixture_path("repeatable/sha256-nocompress-repeatable.result"))
    got = {}
    with open_fixture(rel) as im:
        for path, ino in im.walk():
            node = im.inode(ino)
            if node.is_reg:
                data = im.read(ino, 0, node.size)
                assert len(data) == node.size
                got[path.decode()] = hashlib.md5(data).hexdigest()
                # the same bytes in small, unaligned pieces (chunk and hole boundaries)
                step = 300_007
                pieces = b"".join(im.read(ino, off, step) for off in range(0, node.size, step))
                assert pieces == data
    assert got == md5s
    assert len(md5s) == 23


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_header_facts(rel):
    flags, blob_id = BOOTSTRAPS[rel]
    with open_fixture(rel) as im:
        sb = im.sb
        assert sb.s_flags == flags
        assert sb.s_block_size == 0x100000 and im.chunk_size == 0x100000
        assert sb.s_inodes_count == 51 and sb.s_inode_table_entries == 54
        assert [b.raw_id for b in im.blobs] == [blob_id]
        assert im.blobs[0].readahead_offset == 0 and im.blobs[0].readahead_size == 0
        assert im.compressor == ("lz4_block" if flags & SuperFlags.COMPRESSION_LZ4 else "none")
        assert im.digester == ("blake3" if flags & SuperFlags.HASH_BLAKE3 else "sha256")
        assert im.prefetch == []
        if rel.startswith("historic"):
            # the 2020 builder wrote no extended blob table
            assert sb.s_extended_blob_table_entries == 0
            assert im.blobs[0].features == BlobFeatures.V5_NO_EXT_BLOB_TABLE
        else:
            assert sb.s_blob_table_offset == 8408 and sb.s_blob_table_size == 72
            assert sb.s_extended_blob_table_offset == 8480
            e = im.ext_blob_entries[0]
            assert (e.chunk_count, e.features, e.uncompressed_size, e.compressed_size) == (
                23, 0, 3508766, 3508766)
        assert len(list(im.walk())) == 54
        distinct = {ino for _, ino in im.walk()}
        assert len(distinct) == 52  # 54 records, 3 names of one hard-linked file


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_hard_links_and_hole_chunks(rel):
    with open_fixture(rel) as im:
        names = ["/hardlink-test/foo", "/hardlink-test/test.sh", "/normal-file-test/test.sh"]
        inos = {im.resolve(n) for n in names}
        assert inos == {5}
        assert all(im.inode(5).nlink == 3 for _ in names)
        assert [im.record_of(i)[2] for i in (5, 6, 9)] == [b"foo", b"test.sh", b"test.sh"]
        chunks = im.chunks(im.resolve("/normal-file-test/holefiles/head-hole-1"))
        # the all-zero 1 MiB chunk is stored once and referenced twice: copies of one chunk
        # info that differ only in file_offset
        a, b = chunks[:2]
        assert (a.file_offset, b.file_offset) == (0, 0x100000)
        assert a.replace(file_offset=b.file_offset) == b
        assert a.block_id == blob.digest(bytes(0x100000), im.digester)
        # the 2020 builder left every chunk's index at 0; the current files number them
        assert a.index == (0 if rel.startswith("historic") else 13)
        root = im.inode(1)
        assert root.mtime == 0 and im.record_of(1)[2] == b"/"


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_every_inode_digest_verifies(rel):
    """i_digest per rafs-v5.md §7, recomputed here from the records (also for the 2020 files,
    whose digests upstream called invalid: every one of them verifies)."""
    with open_fixture(rel) as im:
        algo = im.digester
        checked = 0
        for index in range(1, im.sb.s_inode_table_entries + 1):
            off, rec, _name = im.record_of(index)
            mode = rec.i_mode
            if stat.S_ISREG(mode):
                data = b"".join(c.block_id for c in im.chunks_at(off, rec))
            elif stat.S_ISLNK(mode):
                data = bytes(im.buf[off + 128 + (rec.i_name_size + 7) // 8 * 8:][:rec.i_symlink_size])
            elif stat.S_ISDIR(mode):
                first, count = rec.i_child_index, rec.i_child_count
                data = b"".join(im.record_of(i)[1].i_digest for i in range(first, first + count))
            else:
                data = b""
            assert rec.i_digest == blob.digest(data, algo), f"inode index {index}"
            checked += 1
        assert checked == 54


@pytest.mark.parametrize("rel", BOOTSTRAPS)
def test_every_chunk_digest_verifies(rel):
    with open_fixture(rel) as im:
        assert list(model.verify(im)) == []
        refs = sum(len(im.chunks(ino)) for _, ino in im.walk() if im.inode(ino).is_reg)
        assert refs == 29


@pytest.mark.parametrize("name", [BLOB_NONE, BLOB_LZ4])
def test_v5_blob_ids_are_the_sha256_of_the_blob_files(name):
    assert hashlib.sha256(fixture_path(f"repeatable/blobs/{name}").read_bytes()).hexdigest() == name


def test_lz4_blob_is_the_compressed_form_of_the_same_chunks():
    """The lz4 pair and the uncompressed pair hold the same data: equal block ids per file."""
    with open_fixture("historic/repeatable-2020/blake3-lz4_block-non_repeatable") as lz4, \
            open_fixture("repeatable/blake3-lz4_block-non_repeatable") as plain:
        compressed = 0
        for path, ino in plain.walk():
            if not plain.inode(ino).is_reg:
                continue
            a, b = plain.chunks(ino), lz4.chunks(lz4.resolve(path))
            assert [c.block_id for c in a] == [c.block_id for c in b]
            compressed += sum(1 for c in b if c.compressed_size < c.uncompressed_size)
        assert compressed > 0
        assert lz4.blobs[0].compressor == "lz4_block"


def test_concurrent_reads_match_sequential_reads():
    """Threads share one Image and blob store: pread, no shared seek, a locked cache."""
    from concurrent.futures import ThreadPoolExecutor

    boot = fixture_path("historic/repeatable-2020/blake3-lz4_block-non_repeatable")
    with open_image(boot, [fixture_path("repeatable/blobs")], cache_bytes=1 << 20) as im:
        files = [(p, i, im.inode(i).size) for p, i in im.walk() if im.inode(i).is_reg]
        expected = {p: hashlib.md5(im.read(i, 0, size)).hexdigest() for p, i, size in files}
        jobs = [(p, i, off, 70_000) for p, i, size in files for off in range(0, max(size, 1), 70_000)] * 3

        def read(job):
            p, i, off, n = job
            return p, off, im.read(i, off, n)

        with ThreadPoolExecutor(8) as pool:
            pieces = list(pool.map(read, jobs))
    got: dict[bytes, dict[int, bytes]] = {}
    for p, off, data in pieces:
        got.setdefault(p, {})[off] = data
    assert {p: hashlib.md5(b"".join(v[k] for k in sorted(v))).hexdigest() for p, v in got.items()} == expected
