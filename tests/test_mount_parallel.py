"""Eight parallel readers over the whole tree, random offsets and sizes: every byte right.

Half the readers open with O_DIRECT, so their requests reach the server at arbitrary offsets
and sizes instead of the kernel's page-sized readahead; a tiny chunk cache makes the threads
evict each other's chunks all the time.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import random

import pytest

from conftest import needs_root
from corpus import pattern
from mount_helpers import ImageBuilder, Mounts

pytestmark = needs_root

READERS = 8
CHUNK = 0x10000



def image(version: int, compressor: str) -> ImageBuilder:
    b = ImageBuilder(version=version, compressor=compressor, chunk_size=CHUNK)
    sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 777, 1 << 20, (3 << 20) + 5,
             (2 << 20) - 3, 12345, 200_000, 5 * CHUNK]
    for i, size in enumerate(sizes):
        # half random bytes, half text: some chunks compress, some are stored as they are
        data = pattern(size, i) if i % 2 else (b"%08d text line\n" % i * (size // 16 + 1))[:size]
        b.file(f"d{i % 3}/f{i}", data)
    for i in range(40):
        b.file(f"small/{i}", b"s%d" % i * (i + 1))
    return b


def reader(seed: int, files: dict[str, bytes], root: pathlib.Path, direct: bool) -> int:
    rnd = random.Random(seed)
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    checked = 0
    names = sorted(files)
    rnd.shuffle(names)
    for name in names:                         # the whole tree, in pieces of random size
        fd = os.open(root / name, flags)
        try:
            want, pos = files[name], 0
            while True:
                size = rnd.choice([1, 100, 4096, CHUNK - 1, CHUNK + 3, 1 << 20, rnd.randint(1, 300_000)])
                got = os.pread(fd, size, pos)
                assert got == want[pos:pos + size], (seed, name, pos, size)
                checked += len(got)
                if not got:
                    break
                pos += len(got)
        finally:
            os.close(fd)
    for _ in range(300):                       # then random offsets anywhere
        name = rnd.choice(names)
        want = files[name]
        pos = rnd.choice([0, rnd.randint(0, len(want) + 10),
                          max(0, rnd.randint(0, max(1, len(want) // CHUNK)) * CHUNK - rnd.randint(0, 2))])
        size = rnd.randint(1, 1 << 20)
        fd = os.open(root / name, flags)
        try:
            got = os.pread(fd, size, pos)
        finally:
            os.close(fd)
        assert got == want[pos:pos + size], (seed, name, pos, size)
        checked += len(got)
    return checked


@pytest.mark.parametrize("version,compressor,extra", [
    (6, "zstd", ()), (5, "lz4_block", ("--verify-chunks",)), (6, "none", ("--verify-chunks",))])
def test_parallel_random_reads(mounts: Mounts, tmp_path: pathlib.Path, version: int,
                               compressor: str, extra: tuple[str, ...]) -> None:
    built = image(version, compressor).build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--cache-size", "256K",
                     "--threads", "4", *extra)
    files = {}
    for path, node in built.walk():
        if node.is_reg:
            files[os.fsdecode(path[1:])] = built.data[id(node)]
    with concurrent.futures.ThreadPoolExecutor(READERS) as pool:
        jobs = [pool.submit(reader, seed, files, m.path, direct=seed % 2 == 1)
                for seed in range(READERS)]
        checked = [j.result() for j in jobs]
    assert all(c > sum(len(v) for v in files.values()) for c in checked)
