"""`--through-mount`: serve the image with nydusfs's own FUSE mount in a child process.

A child process keeps pyfuse3/trio out of this one and lets the kernel's view be read with plain
system calls. The mount is always taken down again, also when the check fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Iterator

from ..errors import NydusfsError
from ..util.signals import held, sigterm_exits

MOUNT_TIMEOUT = 60.0


def _ours(mnt: str) -> bool:
    return os.path.ismount(mnt)


@contextlib.contextmanager
def mounted(bootstrap: str, blob_dirs: list[str], timeout: float = MOUNT_TIMEOUT,
            extra: list[str] | None = None) -> Iterator[str]:
    """`extra`: more flags for `nydusfs mount` (an image reference's platform and registry options)."""
    with sigterm_exits():  # a SIGTERM takes the mount, its server and the directory down too
        with _mounted(bootstrap, blob_dirs, timeout, extra or []) as mnt:
            yield mnt


@contextlib.contextmanager
def _mounted(bootstrap: str, blob_dirs: list[str], timeout: float, extra: list[str]) -> Iterator[str]:
    mnt: str | None = None
    log: IO[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        with held():  # a signal here must not leave a server whose handle we lost
            mnt = tempfile.mkdtemp(prefix="nydusfs-check-")
            log = tempfile.TemporaryFile()
            cmd = [sys.executable, "-m", "nydusfs", "mount", os.fspath(bootstrap), mnt, "--foreground"]
            for d in blob_dirs:
                cmd += ["--blob-dir", os.fspath(d)]
            cmd += extra
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not _ours(mnt):
            if proc.poll() is not None:
                raise NydusfsError(f"nydusfs mount exited with status {proc.returncode} before "
                                   f"the image was mounted: {_tail(log)}")
            if time.monotonic() > deadline:
                raise NydusfsError(f"nydusfs mount did not mount {bootstrap} within {timeout:.0f}s: "
                                   f"{_tail(log)}")
            time.sleep(0.02)
        yield mnt
    finally:
        if proc is not None and mnt is not None:
            _take_down(proc, mnt)
        if log is not None:
            log.close()
        if mnt is not None:
            with contextlib.suppress(OSError):
                os.rmdir(mnt)


def _take_down(proc: subprocess.Popen, mnt: str) -> None:
    if _ours(mnt):
        done = subprocess.run([sys.executable, "-m", "nydusfs", "umount", mnt],
                              stdin=subprocess.DEVNULL, capture_output=True)
        if done.returncode != 0 and _ours(mnt):
            tool = shutil.which("fusermount3") or shutil.which("fusermount")
            if tool:
                subprocess.run([tool, "-u", "-z", mnt], capture_output=True)
            if _ours(mnt):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: IO[bytes]) -> str:
    try:
        log.seek(0)
        text = log.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no output)"
    return text[-2000:] or "(no output)"
