"""Independent readers of `create` output: the Linux kernel's erofs driver (loop devices) and
erofs-utils' fsck.erofs, on RAFS v6 images whose blob is laid out for the kernel."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess

import corpus
import pytest
from conftest import needs_loop, needs_root, needs_tool
from tarview import tar_view

from nydusfs.create.pipeline import CreateOptions, create


@contextlib.contextmanager
def erofs_mount(boot, blob, where):
    loops = []
    try:
        for path in (blob, boot):
            loops.append(subprocess.run(["losetup", "-f", "--show", "-r", str(path)], check=True,
                                        capture_output=True, text=True).stdout.strip())
        where.mkdir()
        subprocess.run(["mount", "-t", "erofs", "-o", f"ro,device={loops[0]}", loops[1], str(where)],
                       check=True, capture_output=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=False)
    finally:
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], check=False)


def kernel_view(root) -> dict[bytes, dict]:
    out = {}
    base = os.fsencode(str(root))
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            key = full[len(base):]
            out[key] = {
                "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                "mtime": (st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9),
                "data": open(full, "rb").read() if stat.S_ISREG(st.st_mode) else None,
                "symlink": os.readlink(full) if stat.S_ISLNK(st.st_mode) else None,
                "rdev": st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
                "xattrs": {os.fsencode(n): os.getxattr(full, n, follow_symlinks=False)
                           for n in os.listxattr(full, follow_symlinks=False)},
                "ino": st.st_ino, "nlink": st.st_nlink,
            }
    return out


@needs_loop
@pytest.mark.parametrize("chunk_size", [0x1000, 0x10000, 0x100000])
def test_kernel_erofs_mount_equals_the_tar(tmp_path, chunk_size):
    layer = corpus.everything()
    layer.file("huge", corpus.pattern(3 * 0x100000 + 5, 77))
    src = layer.write(tmp_path / "layer.tar")
    boot, blob = tmp_path / "l.boot", tmp_path / "l.blob"
    create(str(src), CreateOptions(bootstrap=str(boot), blob=str(blob), compressor="none",
                                   aligned_chunk=True, chunk_size=chunk_size))
    want = tar_view(src)
    with erofs_mount(boot, blob, tmp_path / "mnt") as mnt:
        got = kernel_view(mnt)
    problems = []
    for path, w in want.items():
        g = got.get(path)
        if g is None:
            problems.append(f"{path!r} missing")
            continue
        for field in ("mode", "uid", "gid", "mtime", "data", "symlink", "rdev", "xattrs"):
            if g[field] != w[field]:
                problems.append(f"{path!r} {field}: kernel {g[field]!r:.80} tar {w[field]!r:.80}")
    # hard links: one inode number, nlink 3
    assert got[b"/l/target"]["ino"] == got[b"/l/hard1"]["ino"] == got[b"/l/hard2"]["ino"]
    assert got[b"/l/target"]["nlink"] == 3
    assert problems == []


@needs_root
@needs_tool("fsck.erofs", "erofs-utils")
def test_fsck_erofs_accepts_v6_output(tmp_path):
    src = corpus.everything().write(tmp_path / "layer.tar")
    boot, blob = tmp_path / "l.boot", tmp_path / "l.blob"
    create(str(src), CreateOptions(bootstrap=str(boot), blob=str(blob), compressor="none",
                                   aligned_chunk=True, chunk_size=0x10000))
    proc = subprocess.run(["fsck.erofs", f"--device={blob}", str(boot)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "extract"
    proc = subprocess.run(["fsck.erofs", f"--device={blob}", f"--extract={out}", str(boot)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "d" / "multi").read_bytes() == tar_view(src)[b"/d/multi"]["data"]
    # a compressed image still passes the metadata check
    create(str(src), CreateOptions(bootstrap=str(tmp_path / "z.boot"), blob=str(tmp_path / "z.blob"),
                                   chunk_size=0x10000))
    proc = subprocess.run(["fsck.erofs", f"--device={tmp_path / 'z.blob'}", str(tmp_path / "z.boot")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
