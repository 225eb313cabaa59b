#!/usr/bin/env python3
"""The floor of nydusfs's FUSE stack: pyfuse3 + trio answering from dicts, no nydusfs code.

Serves a copy of a directory tree (the benchmark's reference tree) read-only, the way
`nydusfs mount` does (same mount options, 24 h entry and attribute timeouts, readdirplus,
keep_cache, the 1 MiB readahead and nydusfs's skipopen shim), but every answer comes from
dicts built before mounting: attributes as ready pyfuse3 objects per inode, children per
directory, symlink targets, xattrs, and every file's bytes in memory. No image decoding, no
decompression, no I/O while serving. Whatever CPU a request costs here is pyfuse3's, trio's
and the kernel's: the least a pyfuse3 + trio server can spend per request.

With `--chunked` every file is kept as zstd-compressed 1 MiB chunks with their blake3 digests,
and each read decompresses and checks the chunks it touches: the floor of a server that does
nydusfs's work per byte (still no image decoding and no I/O).

Bench only (tools/bench's profile section mounts it as `fusefloor`); needs root and RAM for the
whole tree. Run as `fusefloor.py SOURCE MOUNTPOINT [--max-tasks N] [--chunked]`; SIGTERM/SIGINT or an unmount ends it.
"""

from __future__ import annotations

import argparse
import errno
import os
import pathlib
import signal
import stat
import sys
from typing import Any

import blake3
import pyfuse3
import trio
import zstandard

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from nydusfs.fuse import skipopen  # noqa: E402  (the same shim nydusfs installs)

TIMEOUT = 24 * 3600.0
READAHEAD_KB = 1024
CHUNK = 1 << 20             # --chunked: nydusfs's default chunk size
ZSTD_C = zstandard.ZstdCompressor(level=3)
ZSTD_D = zstandard.ZstdDecompressor()
MAX_TASKS = 2 * max(4, os.cpu_count() or 1) + 4


class Tree:
    """Everything a request can ask for, keyed by FUSE inode number (root 1)."""

    def __init__(self, source: pathlib.Path, chunked: bool = False) -> None:
        self.chunked = chunked
        self.chunks: dict[int, list[tuple[bytes, bytes, int]]] = {}   # (zstd frame, blake3, size)
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.children: dict[int, list[tuple[bytes, int]]] = {}
        self.index: dict[tuple[int, bytes], int] = {}
        self.parent: dict[int, int] = {1: 1}
        self.links: dict[int, bytes] = {}
        self.data: dict[int, bytes] = {}
        self.xattrs: dict[int, dict[bytes, bytes]] = {}
        self._numbers: dict[tuple[int, int], int] = {}
        self._add(os.fsencode(source), 1)

    def _number(self, st: os.stat_result) -> tuple[int, bool]:
        key = (st.st_dev, st.st_ino)
        if key in self._numbers:           # another name of a hard-linked file
            return self._numbers[key], False
        ino = self._numbers[key] = len(self._numbers) + 1
        return ino, True

    def _add(self, path: bytes, parent: int) -> int:
        st = os.lstat(path)
        ino, new = self._number(st)
        if not new:
            return ino
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = TIMEOUT
        a.st_mode, a.st_nlink = st.st_mode, st.st_nlink
        a.st_uid, a.st_gid, a.st_rdev = st.st_uid, st.st_gid, st.st_rdev
        a.st_size, a.st_blocks, a.st_blksize = st.st_size, st.st_blocks, 4096
        a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = st.st_mtime_ns
        self.attrs[ino] = a
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        if names:
            self.xattrs[ino] = {os.fsencode(n): os.getxattr(path, n, follow_symlinks=False)
                                for n in names}
        if stat.S_ISDIR(st.st_mode):
            self.parent[ino] = parent
            kids = []
            for name in sorted(os.listdir(path)):
                child = self._add(os.path.join(path, name), ino)
                kids.append((name, child))
                self.index[(ino, name)] = child
            self.children[ino] = kids
        elif stat.S_ISLNK(st.st_mode):
            self.links[ino] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                data = f.read()
            if self.chunked:
                pieces = [data[o:o + CHUNK] for o in range(0, len(data), CHUNK)]
                self.chunks[ino] = [(ZSTD_C.compress(p), blake3.blake3(p).digest(), len(p))
                                    for p in pieces]
            else:
                self.data[ino] = data
        return ino


class FloorOps(pyfuse3.Operations):
    supports_dot_lookup = True

    def __init__(self, tree: Tree) -> None:
        super().__init__()
        self.t = tree
        self.skip_open = False
        negative = pyfuse3.EntryAttributes()
        negative.st_ino = 0
        negative.entry_timeout = TIMEOUT
        self.negative = negative

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        if name == b".":
            return self.t.attrs[parent_inode]
        if name == b"..":
            return self.t.attrs[self.t.parent[parent_inode]]
        ino = self.t.index.get((parent_inode, name))
        return self.negative if ino is None else self.t.attrs[ino]

    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self.t.attrs[inode]

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return self.t.links[inode]

    async def forget(self, inode_list: Any) -> None:
        pass

    async def statfs(self, ctx: Any = None) -> Any:
        # answered, as nydusfs does: find (gnulib fts) asks again for every directory otherwise
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = sum(a.st_size for a in self.t.attrs.values()) // 4096
        s.f_files = len(self.t.attrs)
        s.f_namemax = 255
        return s

    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        try:
            return self.t.xattrs[inode][name]
        except KeyError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None

    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return list(self.t.xattrs.get(inode, ()))

    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if self.skip_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        attrs, kids = self.t.attrs, self.t.children[fh]
        for pos in range(start_id, len(kids) + 2):
            if pos == 0:
                name, a = b".", attrs[fh]
            elif pos == 1:
                name, a = b"..", attrs[self.t.parent[fh]]
            else:
                name, child = kids[pos - 2]
                a = attrs[child]
            if not pyfuse3.readdir_reply(token, name, a, pos + 1):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    async def open(self, inode: int, flags: int, ctx: Any = None) -> Any:
        if self.skip_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if not self.t.chunked:
            return self.t.data[fh][off:off + size]
        # what any server of compressed, verified chunks must do per read: decompress each
        # chunk the range touches and check its digest (no cache: a sequential reader asks
        # for each chunk once)
        chunks, out = self.t.chunks[fh], []
        first, last = off // CHUNK, (off + size - 1) // CHUNK
        for i in range(first, min(last + 1, len(chunks))):
            frame, digest, n = chunks[i]
            data = ZSTD_D.decompress(frame, max_output_size=n)
            if blake3.blake3(data, max_threads=1).digest() != digest:
                raise pyfuse3.FUSEError(errno.EIO)
            out.append(data)
        whole = b"".join(out)
        start = off - first * CHUNK
        return whole[start:start + size]

    async def release(self, fh: int) -> None:
        pass


async def _serve(mountpoint: str, max_tasks: int) -> None:
    async with trio.open_nursery() as nursery:
        async def ready() -> None:
            st = await trio.to_thread.run_sync(os.stat, mountpoint)
            try:
                with open(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb",
                          "w") as f:
                    f.write(str(READAHEAD_KB))
            except OSError:
                pass

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as rx:
                async for _ in rx:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(ready)
        nursery.start_soon(signals)
        await pyfuse3.main(min_tasks=min(2, max_tasks), max_tasks=max_tasks)
        nursery.cancel_scope.cancel()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("source", type=pathlib.Path)
    ap.add_argument("mountpoint")
    ap.add_argument("--max-tasks", type=int, default=MAX_TASKS,
                    help=f"pyfuse3 request tasks (default {MAX_TASKS}, what nydusfs uses with its "
                         "default --threads)")
    ap.add_argument("--chunked", action="store_true",
                    help="keep every file as zstd-compressed 1 MiB chunks with blake3 digests, "
                         "decompressed and checked on each read (the floor of a server that "
                         "does nydusfs's work per byte)")
    args = ap.parse_args()
    source, mountpoint = args.source, args.mountpoint
    tree = Tree(source, args.chunked)
    ops = FloorOps(tree)
    pyfuse3.init(ops, mountpoint, {"ro", "default_permissions", "fsname=fusefloor",
                                   "subtype=fusefloor", "nosuid", "nodev"})
    ops.skip_open = skipopen.install()
    print(f"fusefloor: {len(tree.attrs)} inodes, {len(tree.data) + len(tree.chunks)} files, "
          f"skipopen {ops.skip_open}", file=sys.stderr, flush=True)
    try:
        trio.run(_serve, mountpoint, args.max_tasks)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
