"""Helpers for the FUSE mount tests: run `nydusfs mount`, always clean up, build images in code,
and compare a mounted tree with a reference field by field.

Every mount made through `Mounts` is unmounted and its server stopped when the test ends,
whatever happened (lazy unmount, then SIGKILL of that server's pid if it did not exit).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from nydusfs.format.blob import compress, digest
from nydusfs.format.flags import BlobFeatures, ChunkFlags
from nydusfs.format.v5 import ChunkInfo
from nydusfs.fuse.mounts import (
    FSTYPE,
    default_pid_file,
    mount_entry,
    process_alive,
    read_pid_file,
)
from nydusfs.tree.node import BlobDesc, Node, Tree, new_dir, split_path
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6

NYDUSFS = [sys.executable, "-m", "nydusfs"]


def nydusfs(*args: Any, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [a if isinstance(a, str) else os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    return subprocess.run(NYDUSFS + argv, capture_output=True, timeout=timeout, check=check)


def is_ours_mounted(path: str | os.PathLike) -> bool:
    e = mount_entry(os.path.abspath(path))
    return e is not None and e.fstype == FSTYPE


# --- mounts that always go away ----------------------------------------------------------------

@dataclasses.dataclass
class Mount:
    path: pathlib.Path
    pid_file: pathlib.Path
    log_file: pathlib.Path
    proc: subprocess.Popen | None = None      # the --foreground server

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        found = read_pid_file(str(self.pid_file))
        return found[0] if found else None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 30) -> str:
        """The log once it contains `text` (the server writes it in the background)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} never logged; log:\n{self.log()}"
            time.sleep(0.02)
        return self.log()


# a server log line: "<date> <time> nydusfs[<pid>] <LEVEL> <message>"
LOG_LINE = re.compile(r"^\S+ \S+ nydusfs\[\d+\] (?P<level>[A-Z]+) (?P<message>.*)$")
PROBLEM_LEVELS = {"WARNING", "ERROR", "CRITICAL"}


def logged_problems(log: str) -> list[str]:
    """Warning and error lines of a server log, and any traceback line (which follows an error
    line only with --debug, but is never expected)."""
    out = []
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if (m and m.group("level") in PROBLEM_LEVELS) or line.startswith("Traceback"):
            out.append(line)
    return out


class Mounts:
    """Mount factory for one test; `cleanup()` undoes everything it made.

    Every warning or error a server logs fails the test (`unexpected_log_lines`, checked by an
    autouse fixture in conftest.py after cleanup) unless the test declared it beforehand with
    `expect_log(regex)`; a declared pattern that no line matched fails the test as well.
    """

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.made: list[Mount] = []
        self.count = 0
        self.expected: list[re.Pattern[str]] = []

    def expect_log(self, pattern: str) -> None:
        """Declare a warning or error this test makes the server log (a regex on the line)."""
        self.expected.append(re.compile(pattern))

    def log_verdict(self) -> list[str]:
        """Problems of the servers' logs: unexpected lines, and expectations nothing met."""
        lines = [line for m in self.made for line in logged_problems(m.log())]
        unexpected = [f"unexpected server log line: {line}" for line in lines
                      if not any(p.search(line) for p in self.expected)]
        unmet = [f"expected a server log line matching {p.pattern!r}, none was logged"
                 for p in self.expected if not any(p.search(line) for line in lines)]
        return unexpected + unmet

    def _new(self, mountpoint: str | os.PathLike | None) -> Mount:
        self.count += 1
        mp = pathlib.Path(mountpoint) if mountpoint else self.tmp / f"mnt{self.count}"
        mp.mkdir(parents=True, exist_ok=True)
        m = Mount(mp, self.tmp / f"mnt{self.count}.pid", self.tmp / f"mnt{self.count}.log")
        self.made.append(m)
        return m

    def mount(self, bootstrap: str | os.PathLike, *args: Any,
              mountpoint: str | os.PathLike | None = None, default_files: bool = False) -> Mount:
        """`nydusfs mount` in the background; asserts it succeeded. With `default_files` the
        pid file is the default one for the mountpoint and there is no log file."""
        m = self._new(mountpoint)
        if default_files:
            m.pid_file = pathlib.Path(default_pid_file(str(m.path)))
            done = nydusfs("mount", bootstrap, m.path, *args)
        else:
            done = nydusfs("mount", bootstrap, m.path, "--pid-file", m.pid_file, "--log-file",
                           m.log_file, *args)
        assert done.returncode == 0, (done.stderr.decode(errors="replace"), m.log())
        assert is_ours_mounted(m.path)
        return m

    def foreground(self, bootstrap: str | os.PathLike, *args: Any) -> Mount:
        """`nydusfs mount --foreground` as a child process, returned once the mount answers."""
        m = self._new(None)
        m.proc = subprocess.Popen(NYDUSFS + ["mount", os.fspath(bootstrap), str(m.path),
                                             "--foreground", "--pid-file", str(m.pid_file),
                                             "--log-file", str(m.log_file)]
                                  + [os.fspath(a) for a in args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        m.wait_log("serving ")
        return m

    def cleanup(self) -> None:
        for m in self.made:
            pid = m.pid
            if is_ours_mounted(m.path):
                done = subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True, check=False)
                if done.returncode != 0 and is_ours_mounted(m.path):
                    subprocess.run(["umount", "-l", str(m.path)], capture_output=True, check=False)
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
            elif pid is not None:
                deadline = time.monotonic() + 10
                while process_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if process_alive(pid):
                    os.kill(pid, signal.SIGKILL)


# --- images built in code ----------------------------------------------------------------------

@dataclasses.dataclass
class Built:
    bootstrap: pathlib.Path
    blob_dir: pathlib.Path
    blob_files: list[pathlib.Path]
    tree: Tree
    data: dict[int, bytes]                 # id(node) -> content of a regular file
    blob_of: dict[int, int]                # id(node) -> blob index of its chunks

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """Every name of the reference tree (hard links appear under each name)."""
        return self.tree.walk()


class ImageBuilder:
    """A reference tree plus the data of its files, written as a bootstrap and blob files.

    Chunks are laid out back to back in the blob of their file (`blob=`), compressed with the
    tree's compressor when that shrinks them, digests from `nydusfs.format.blob.digest`.
    """

    def __init__(self, version: int = 6, compressor: str = "zstd", digester: str = "blake3",
                 chunk_size: int = 0x10000, explicit_uid_gid: bool = True, blobs: int = 1,
                 root_mode: int = 0o755, mtime: int = 1_700_000_000) -> None:
        self.tree = Tree(root=new_dir(root_mode, mtime=mtime), version=version,
                         compressor=compressor, digester=digester, chunk_size=chunk_size,
                         explicit_uid_gid=explicit_uid_gid)
        self.nblobs = blobs
        self.mtime = mtime
        self.data: dict[int, bytes] = {}
        self.blob_of: dict[int, int] = {}

    def _parent(self, path: bytes | str) -> tuple[Node, bytes]:
        parts = split_path(os.fsencode(path))
        node = self.tree.root
        for part in parts[:-1]:
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = new_dir(0o755, mtime=self.mtime)
            node = child
        return node, parts[-1]

    def add(self, path: bytes | str, node: Node) -> Node:
        parent, name = self._parent(path)
        assert parent.children is not None
        parent.children[name] = node
        return node

    def dir(self, path: bytes | str, mode: int = 0o755, **kw: Any) -> Node:
        kw.setdefault("mtime", self.mtime)
        return self.add(path, new_dir(mode, **kw))

    def file(self, path: bytes | str, data: bytes, mode: int = 0o644, blob: int = 0,
             **kw: Any) -> Node:
        kw.setdefault("mtime", self.mtime)
        node = self.add(path, Node(mode=stat.S_IFREG | mode, size=len(data), **kw))
        self.data[id(node)] = data
        self.blob_of[id(node)] = blob
        return node

    def symlink(self, path: bytes | str, target: bytes | str, **kw: Any) -> Node:
        kw.setdefault("mtime", self.mtime)
        return self.add(path, Node(mode=stat.S_IFLNK | 0o777, symlink=os.fsencode(target), **kw))

    def special(self, path: bytes | str, mode: int, rdev: int = 0, **kw: Any) -> Node:
        kw.setdefault("mtime", self.mtime)
        return self.add(path, Node(mode=mode, rdev=rdev, **kw))

    def hardlink(self, path: bytes | str, existing: bytes | str) -> Node:
        node = self.tree.lookup(os.fsencode(existing))
        assert node is not None and not node.is_dir
        return self.add(path, node)

    def prefetch(self, *paths: bytes | str) -> None:
        self.tree.prefetch = [os.fsencode(p) for p in paths]

    def build(self, out: pathlib.Path, name: str = "image.boot") -> Built:
        out.mkdir(parents=True, exist_ok=True)
        blob_dir = out / "blobs"
        blob_dir.mkdir(exist_ok=True)
        t = self.tree
        aligned = t.version == 6
        parts: list[list[bytes]] = [[] for _ in range(self.nblobs)]
        sizes = [0] * self.nblobs          # compressed bytes so far
        usizes = [0] * self.nblobs         # uncompressed offsets so far
        counts = [0] * self.nblobs
        seen: set[int] = set()
        for _, node in t.walk():
            if not node.is_reg or id(node) in seen:
                continue
            seen.add(id(node))
            b, data = self.blob_of[id(node)], self.data[id(node)]
            node.chunks = []
            for off in range(0, len(data), t.chunk_size):
                raw = data[off:off + t.chunk_size]
                packed, compressed = compress(raw, t.compressor)
                node.chunks.append(ChunkInfo(
                    block_id=digest(raw, t.digester), blob_index=b,
                    flags=int(ChunkFlags.COMPRESSED) if compressed else 0,
                    compressed_size=len(packed), uncompressed_size=len(raw),
                    compressed_offset=sizes[b], uncompressed_offset=usizes[b], file_offset=off,
                    index=counts[b], crc32=0))
                parts[b].append(packed)
                sizes[b] += len(packed)
                usizes[b] += (len(raw) + 4095) // 4096 * 4096 if aligned else len(raw)
                counts[b] += 1
        files, t.blobs = [], []
        for b in range(self.nblobs):
            raw = b"".join(parts[b])
            blob_id = hashlib.sha256(raw + b"%d" % b).hexdigest()   # distinct even when empty
            path = blob_dir / blob_id
            path.write_bytes(raw)
            files.append(path)
            t.blobs.append(BlobDesc(blob_id=blob_id, compressor=t.compressor, digester=t.digester,
                                    chunk_size=t.chunk_size, chunk_count=counts[b],
                                    compressed_size=len(raw), uncompressed_size=usizes[b],
                                    features=int(BlobFeatures.ALIGNED) if aligned else 0))
        boot, missing = (write_v6 if t.version == 6 else write_v5)(t)
        assert not missing, missing
        bootstrap = out / name
        bootstrap.write_bytes(boot)
        return Built(bootstrap, blob_dir, files, t, self.data, self.blob_of)


# --- comparing a mounted tree with a reference -------------------------------------------------

def mounted_names(mountpoint: pathlib.Path) -> set[bytes]:
    """Every path under the mount, relative, as bytes, '/'-prefixed (the root is b'/')."""
    base = os.fsencode(mountpoint)
    out = {b"/"}
    for dirpath, dirnames, filenames in os.walk(base):
        rel = dirpath[len(base):]
        for n in dirnames + filenames:
            out.add(rel + b"/" + n)
    return out


REJECTED = b"<the kernel refused this value: EINVAL>"


def xattrs_of(path: bytes) -> dict[bytes, bytes]:
    """Every xattr of `path`. The kernel validates security.capability on the way out and
    answers EINVAL for a malformed one (on any filesystem); that shows as REJECTED."""
    out = {}
    for n in os.listxattr(path, follow_symlinks=False):
        try:
            out[os.fsencode(n)] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            if not (e.errno == errno.EINVAL and n == "security.capability"):
                raise
            out[os.fsencode(n)] = REJECTED
    return out


def compare_with_built(built: Built, mountpoint: pathlib.Path, image: Any,
                       owner: tuple[int, int] | None = None) -> int:
    """Every field of every entry against the reference tree; returns the number of entries.

    Directory sizes are whatever the bootstrap writer chose, so they come from `image` (an
    open reader of the same bootstrap); everything else comes from the reference alone.
    """
    base = os.fsencode(mountpoint)
    expected = {p for p, _ in built.walk()}
    assert mounted_names(mountpoint) == expected
    inos: dict[int, int] = {}
    names_of: dict[int, int] = {}
    for _, node in built.walk():
        names_of[id(node)] = names_of.get(id(node), 0) + 1
    for path, node in built.walk():
        full = base + (b"" if path == b"/" else path)
        st = os.lstat(full)
        assert st.st_mode == node.mode, path
        assert (st.st_uid, st.st_gid) == (owner or (node.uid, node.gid)), path
        assert st.st_mtime_ns == node.mtime * 10**9 + node.mtime_nsec, path
        if node.is_dir:
            subdirs = sum(1 for c in (node.children or {}).values() if c.is_dir)
            assert st.st_nlink == 2 + subdirs, path
            assert st.st_size == image.inode(image.resolve(path)).size, path
            assert sorted(os.listdir(full)) == sorted(node.children or {}), path
        else:
            assert st.st_nlink == names_of[id(node)], path
        if node.is_symlink:
            assert os.readlink(full) == node.symlink, path
            assert st.st_size == len(node.symlink or b""), path
        if node.is_reg:
            assert st.st_size == len(built.data[id(node)]), path
            with open(full, "rb") as f:
                assert f.read() == built.data[id(node)], path
        if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
            assert st.st_rdev == node.rdev, path
        assert xattrs_of(full) == node.xattrs, path
        # one inode number per node: hard links share it, nothing else does
        assert inos.setdefault(id(node), st.st_ino) == st.st_ino, path
    assert len(set(inos.values())) == len(inos)
    return len(expected)


def compare_with_reader(image: Any, mountpoint: pathlib.Path, *, data: bool = True,
                        owner: tuple[int, int] | None = None) -> int:
    """Every entry of the mount against the reader's view of the same bootstrap."""
    base = os.fsencode(mountpoint)
    seen: dict[object, int] = {}
    names = set()
    for path, ino in image.walk():
        names.add(path)
        node = image.inode(ino)
        full = base + (b"" if path == b"/" else path)
        st = os.lstat(full)
        assert st.st_mode == node.mode, path
        assert (st.st_uid, st.st_gid) == (owner or (node.uid, node.gid)), path
        assert st.st_size == node.size, path
        assert st.st_nlink == (node.nlink or 1), path
        assert st.st_mtime_ns == node.mtime * 10**9 + node.mtime_nsec, path
        assert st.st_rdev == node.rdev, path
        if node.is_symlink:
            assert os.readlink(full) == image.readlink(ino), path
        assert xattrs_of(full) == dict(image.xattrs(ino)), path
        if data and node.is_reg:
            with open(full, "rb") as f:
                assert f.read() == image.read(ino, 0, node.size), path
        key = image.link_key(ino) if not node.is_dir else ("dir", ino)
        assert seen.setdefault(key, st.st_ino) == st.st_ino, path
    assert len(set(seen.values())) == len(seen)
    assert mounted_names(mountpoint) == names
    return len(names)


def md5_lines(mountpoint: pathlib.Path) -> list[str]:
    """`find MNT -type f -exec md5sum {} + | sort` with the mount prefix stripped."""
    base = os.fsencode(mountpoint)
    out = []
    for dirpath, _, filenames in os.walk(base):
        for n in filenames:
            full = os.path.join(dirpath, n)
            if stat.S_ISREG(os.lstat(full).st_mode):
                with open(full, "rb") as f:
                    h = hashlib.md5(f.read()).hexdigest()
                out.append(f"{h}  {os.fsdecode(full[len(base):])}")
    return sorted(out)


def snapshot_mount(mountpoint: pathlib.Path) -> dict:
    """The mounted tree in the shape of `stacks.Entry`, from lstat/readlink/xattrs/reads only."""
    from stacks import KINDS, Entry

    base = os.fsencode(mountpoint)
    paths = sorted(mounted_names(mountpoint))
    stats = {p: os.lstat(base + (b"" if p == b"/" else p)) for p in paths}
    groups: dict[int, list[bytes]] = {}
    for p, st in stats.items():
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault(st.st_ino, []).append(p)
    out = {}
    for p, st in stats.items():
        full = base + (b"" if p == b"/" else p)
        kind = KINDS[stat.S_IFMT(st.st_mode)]
        content = None
        if kind == "file":
            with open(full, "rb") as f:
                content = f.read()
        out[p] = Entry(
            kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
            mtime=divmod(st.st_mtime_ns, 10**9), xattrs=tuple(sorted(xattrs_of(full).items())),
            size=st.st_size if kind in ("file", "symlink") else None, content=content,
            symlink=os.readlink(full) if kind == "symlink" else None,
            rdev=st.st_rdev if kind in ("char", "block") else 0, nlink=st.st_nlink,
            links=() if kind == "dir" else tuple(sorted(groups[st.st_ino])))
    return out
