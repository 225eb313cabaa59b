"""Mount table, unmounting and pid files. Imports neither pyfuse3 nor trio (`nydusfs umount`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse

from ..errors import MountError

FSTYPE = "fuse.nydusfs"
MNT_DETACH = 2


@dataclasses.dataclass(frozen=True, slots=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_entries() -> list[MountEntry]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(" "), right.split(" ")
        if len(fields) < 6 or len(tail) < 3:
            continue
        out.append(MountEntry(_unescape(fields[4]), tail[0], _unescape(tail[1]), fields[5]))
    return out


def mount_entry(path: str) -> MountEntry | None:
    """The topmost mount at exactly `path` (an absolute, normalised path), if any."""
    found = None
    for e in mount_entries():
        if e.mountpoint == path:
            found = e
    return found


def canonical_path(path: str) -> str:
    """Absolute path with symlinks resolved, without stat-ing a (maybe dead) mount's root."""
    path = os.path.abspath(path)
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head), tail) if tail else path


def is_stale(path: str) -> bool:
    """A FUSE mount whose server is gone answers ENOTCONN (or ECONNABORTED). statfs, because the kernel may
    answer a stat from its attribute cache but always asks the server for statfs."""
    try:
        os.statvfs(path)
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def unmount(path: str, lazy: bool = False) -> None:
    """umount2 as root; fusermount3 (the setuid helper) otherwise. Raises MountError."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.umount2(os.fsencode(path), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            hint = ""
            if err == errno.EBUSY:
                hint = " (files are open there or a process has its working directory there; " \
                       "close them, or use --lazy to detach now and finish when they are closed)"
            raise MountError(f"cannot unmount {path}: {os.strerror(err)}{hint}")
        return
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise MountError(f"cannot unmount {path}: fusermount3 not found (install fuse3)")
    cmd = [tool, "-u"] + (["-z"] if lazy else []) + [path]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MountError(f"cannot unmount {path}: {done.stderr.strip() or 'fusermount3 failed'}")


# --- pid files -------------------------------------------------------------------------------

def runtime_dir() -> str:
    if os.geteuid() == 0:
        return "/run/nydusfs"
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "nydusfs")
    return os.path.join(tempfile.gettempdir(), f"nydusfs-{os.getuid()}")


def default_pid_file(mountpoint: str) -> str:
    """One pid file per mountpoint, named after it (hashed when too long for a file name)."""
    name = urllib.parse.quote(mountpoint, safe="")
    if len(name) > 200:
        name = name[:120] + "-" + hashlib.sha256(mountpoint.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(runtime_dir(), name + ".pid")


def write_pid_file(path: str, pid: int, mountpoint: str, make_dir: bool = False) -> None:
    if make_dir:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(f"{pid}\n{mountpoint}\n")
    os.replace(tmp, path)


def read_pid_file(path: str) -> tuple[int, str] | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            pid, _, mountpoint = f.read().partition("\n")
        return int(pid), mountpoint.rstrip("\n")
    except (OSError, ValueError):
        return None


def remove_pid_file(path: str, pid: int) -> None:
    """Remove the pid file if it still names `pid` (a newer mount may have replaced it)."""
    found = read_pid_file(path)
    if found is not None and found[0] == pid:
        try:
            os.unlink(path)
        except OSError:
            pass


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
