"""Decode -> encode is byte-identical: every structure the reader decodes, written back at its
offset into a zeroed buffer, rebuilds each fixture bootstrap exactly (`reader.regions`).

The same holds for bootstraps made by the nydusfs writers from random trees, which also carry
what no upstream fixture has (xattrs, devices, multi-block directories, long symlinks, several
blobs, prefetch tables); their decoded attributes must be the ones written.
"""

from __future__ import annotations

import os
import random
import stat
import tempfile

import pytest
from conftest import fixture_path
from hypothesis import given, settings
from hypothesis import strategies as st

from nydusfs.format import v6
from nydusfs.format.v5 import ChunkInfo
from nydusfs.reader import open_image
from nydusfs.reader.regions import first_difference, reencode, regions
from nydusfs.tree.node import BlobDesc, Node, Tree, new_dir
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6

FIXTURE_BOOTSTRAPS = [
    "bootstrap/rafs-v6-2.2.boot",
    "repeatable/sha256-nocompress-repeatable",
    "repeatable/blake3-lz4_block-non_repeatable",
    "historic/repeatable-2020/blake3-lz4_block-non_repeatable",
    "historic/repeatable-2020/sha256-nocompress-repeatable",
    "acceleration-service/v5-image.boot",
    "acceleration-service/v6-image-raw-size-438272.boot",
    "nydus-snapshotter/v5-bootstrap-file-size-736032.tar.gz",
    "nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz",
    "toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca",
]


@pytest.mark.parametrize("rel", FIXTURE_BOOTSTRAPS)
def test_fixture_bootstraps_reencode_byte_identical(rel):
    with open_image(fixture_path(rel)) as im:
        raw = bytes(im.buf)
        assert first_difference(im) is None
        assert reencode(im) == raw
        kinds = {r.what.split(" ")[0] for r in regions(im)}
        assert {"superblock"} <= kinds


def test_reencoding_notices_a_byte_no_decoder_reads(tmp_path):
    """The check can fail: a byte in the root name's padding is no part of any structure."""
    raw = bytearray(fixture_path("repeatable/sha256-nocompress-repeatable").read_bytes())
    with open_image(fixture_path("repeatable/sha256-nocompress-repeatable")) as im:
        pad = im.record_of(1)[0] + 128 + 1  # after the 1-byte name "/"
    raw[pad] = 0x41
    (tmp_path / "boot").write_bytes(raw)
    with open_image(tmp_path / "boot") as im:
        at, covering = first_difference(im)
        assert at == pad and covering == ["inode index 1 name"]


def test_reencoding_notices_junk_in_an_unused_v6_area(tmp_path):
    raw = bytearray(fixture_path("bootstrap/rafs-v6-2.2.boot").read_bytes())
    raw[2 * 4096 + 100] = 1  # the unused first block of the meta area
    (tmp_path / "boot").write_bytes(raw)
    with open_image(tmp_path / "boot") as im:
        assert first_difference(im) == (2 * 4096 + 100, [])


# --- bootstraps from the nydusfs writers ------------------------------------------------------

CHUNK = 0x1000
V6_PREFIXES = [b"user.", b"trusted.", b"security."]


def random_tree(rng: random.Random, entries: int, nblobs: int, cross_dir_links: bool = True) -> Tree:
    blobs = [BlobDesc(blob_id=rng.randbytes(32).hex(), compressor="zstd", digester="blake3",
                      chunk_size=CHUNK, features=0x1) for _ in range(nblobs)]
    next_index = [0] * nblobs
    next_uoff = [0] * nblobs
    root = new_dir(0o755, uid=rng.randrange(70000), mtime=rng.randrange(1 << 33),
                   mtime_nsec=rng.randrange(10 ** 9))
    dirs, files, paths = [(b"", root)], [], []

    def name() -> bytes:
        length = rng.choice([1, 2, 8, 40, 255])
        return bytes(rng.choice(b"abcxyz.-_\x80\xff0123") for _ in range(length)).replace(b".", b"d", 1)

    def chunks_for(size: int) -> list[ChunkInfo]:
        out = []
        for k in range((size + CHUNK - 1) // CHUNK):
            b = rng.randrange(nblobs)
            usize = min(CHUNK, size - k * CHUNK)
            out.append(ChunkInfo(rng.randbytes(32), b, 1, usize // 2 + 1, usize, rng.randrange(1 << 30),
                                 next_uoff[b], k * CHUNK, next_index[b], 0))
            next_index[b] += 1
            next_uoff[b] += CHUNK
        return out

    for _ in range(entries):
        base, parent = rng.choice(dirs)
        n = name()
        if n in (b".", b"..") or n in parent.children:
            continue
        kind = rng.choice(["dir", "file", "file", "symlink", "char", "block", "fifo", "sock", "link"])
        attrs = {"uid": rng.randrange(1 << 32), "gid": rng.randrange(1 << 32),
                     "mtime": rng.randrange(1 << 40), "mtime_nsec": rng.randrange(10 ** 9)}
        if kind == "link" and files:
            local = [c for c in parent.children.values() if c.is_reg]
            if not cross_dir_links and not local:
                continue
            node = rng.choice(files if cross_dir_links else local)
        elif kind == "dir":
            node = new_dir(rng.randrange(0o7777), **attrs)
            dirs.append((base + b"/" + n, node))
        elif kind == "symlink":
            target = rng.randbytes(rng.choice([1, 30, 4095, 5000])).replace(b"\0", b"x")
            node = Node(mode=stat.S_IFLNK | 0o777, symlink=target, **attrs)
        elif kind in ("char", "block"):
            fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            node = Node(mode=fmt | 0o600, rdev=os.makedev(rng.randrange(4096), rng.randrange(1 << 20)), **attrs)
        elif kind in ("fifo", "sock"):
            node = Node(mode=(stat.S_IFIFO if kind == "fifo" else stat.S_IFSOCK) | 0o644, **attrs)
        else:
            size = rng.choice([0, 1, 4095, 4096, 9000, 3 * CHUNK + 7])
            node = Node(mode=stat.S_IFREG | rng.randrange(0o7777), size=size, chunks=chunks_for(size), **attrs)
            files.append(node)
        if rng.random() < 0.3:
            node.xattrs = {rng.choice(V6_PREFIXES) + name()[:50]: rng.randbytes(rng.randrange(0, 300))
                           for _ in range(rng.randrange(1, 4))}
        parent.children[n] = node
        paths.append(base + b"/" + n)
    for b, desc in enumerate(blobs):
        desc.chunk_count = next_index[b]
        desc.uncompressed_size = desc.compressed_size = next_uoff[b]
    prefetch = rng.sample(paths, min(len(paths), rng.randrange(3)))
    return Tree(root=root, chunk_size=CHUNK, blobs=blobs, prefetch=prefetch, compressor="zstd")


def assert_image_holds_tree(im, tree: Tree) -> None:
    links: dict[int, list[int]] = {}
    count = 0
    for path, node in tree.walk():
        ino = im.resolve(path)
        got = im.inode(ino)
        count += 1
        assert (got.mode, got.uid, got.gid, got.mtime, got.mtime_nsec) == (
            node.mode, node.uid, node.gid, node.mtime, node.mtime_nsec), path
        assert dict(im.xattrs(ino)) == node.xattrs
        if node.is_reg:
            assert got.size == node.size
            assert list(im.chunks(ino)) == node.chunks
            links.setdefault(id(node), []).append(ino)
        elif node.is_symlink:
            assert im.readlink(ino) == node.symlink
        elif stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
            assert got.rdev == node.rdev
        elif node.is_dir:
            assert [n for n, _ in im.readdir(ino)] == sorted(node.children)
    for inos in links.values():  # every name of a hard-linked file is one inode
        assert len({im.link_key(i) for i in inos}) == 1
        assert all(im.inode(i).nlink == len(inos) for i in inos)
    assert count == len(list(im.walk()))
    assert set(im.prefetch) == {im.resolve(p) for p in tree.prefetch}


def write_and_open(tree: Tree, version: int, tmpdir: str):
    raw = (write_v5 if version == 5 else write_v6)(tree)[0]
    path = os.path.join(tmpdir, f"boot{version}")
    with open(path, "wb") as f:
        f.write(raw)
    return raw, open_image(path)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1 << 32), entries=st.integers(1, 60), nblobs=st.integers(1, 3),
       version=st.sampled_from([5, 6]))
def test_writer_bootstraps_reencode_and_read_back(seed, entries, nblobs, version):
    # see test_v5_writer_hard_link_into_an_earlier_directory for the v5 restriction
    tree = random_tree(random.Random(seed), entries, nblobs, cross_dir_links=version == 6)
    with tempfile.TemporaryDirectory() as tmp:
        raw, im = write_and_open(tree, version, tmp)
        with im:
            assert reencode(im) == raw
            assert_image_holds_tree(im, tree)


@pytest.mark.parametrize("version", [5, 6])
def test_writer_bootstrap_with_every_v6_layout(version, tmp_path):
    """Multi-block directories (full blocks plus inline tail, and exact multiples of the block
    size: FLAT_PLAIN), long symlinks, xattrs of each name index, devices."""
    rng = random.Random(7)
    root = new_dir(0o755)
    big = root.children[b"big"] = new_dir(0o755)
    for i in range(120):
        big.children[b"n%03d" % i + b"x" * 60] = Node(mode=stat.S_IFREG | 0o644)
    # a directory whose dirents fill exactly one block: ".", ".." (27 bytes), 15 entries of
    # 12 + 255 and one of 12 + 52 make 4096
    exact = root.children[b"exact"] = new_dir(0o755)
    for i in range(15):
        exact.children[b"%02d" % i + b"g" * 253] = Node(mode=stat.S_IFREG | 0o644)
    exact.children[b"z" * 52] = Node(mode=stat.S_IFREG | 0o644)
    root.children[b"long"] = Node(mode=stat.S_IFLNK | 0o777, symlink=b"t" * 4096)
    root.children[b"longer"] = Node(mode=stat.S_IFLNK | 0o777, symlink=b"u" * 9000)
    root.children[b"acl"] = Node(mode=stat.S_IFREG | 0o644, xattrs={
        b"system.posix_acl_access": rng.randbytes(28), b"system.posix_acl_default": b"",
        b"user.k": b"v", b"trusted.overlay.opaque": b"y", b"security.capability": rng.randbytes(20)})
    root.children[b"tty"] = Node(mode=stat.S_IFCHR | 0o620, rdev=os.makedev(4, 1))
    root.children[b"sda"] = Node(mode=stat.S_IFBLK | 0o660, rdev=os.makedev(8, 0x12345))
    tree = Tree(root=root, chunk_size=CHUNK, blobs=[])
    raw, im = write_and_open(tree, version, str(tmp_path))
    with im:
        assert reencode(im) == raw
        assert_image_holds_tree(im, tree)
        if version == 6:
            layouts = {p: v6.data_layout(im.inode(i).record.i_format) for p, i in im.walk()}
            assert layouts[b"/exact"] == v6.LAYOUT_FLAT_PLAIN and im.inode(im.resolve(b"/exact")).size == 4096
            assert layouts[b"/big"] == v6.LAYOUT_FLAT_INLINE and im.inode(im.resolve(b"/big")).size > 4096
            assert layouts[b"/longer"] in (v6.LAYOUT_FLAT_INLINE, v6.LAYOUT_FLAT_PLAIN)
            assert layouts[b"/long"] == v6.LAYOUT_FLAT_PLAIN
            assert len(im.dirents(im.resolve(b"/big"))) == 122
            for name in sorted(big.children)[::17]:
                assert im.lookup(im.resolve(b"/big"), name)


def test_v5_writer_hard_link_into_an_earlier_directory(tmp_path):
    root = new_dir()
    a = root.children[b"a"] = new_dir()
    b = root.children[b"b"] = new_dir()
    c = b.children[b"c"] = new_dir()
    f = a.children[b"x"] = Node(mode=stat.S_IFREG | 0o644)
    c.children[b"y"] = f
    tree = Tree(root=root, chunk_size=CHUNK)
    raw, im = write_and_open(tree, 5, str(tmp_path))
    with im:
        assert reencode(im) == raw
        assert_image_holds_tree(im, tree)
