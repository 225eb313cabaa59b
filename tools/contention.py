"""Background competitors for tools/bench's contended mount section.

What a busy node does next to a FUSE server, in three kinds, all started and stopped here:

  cpu  one busy loop per core (pure CPU);
  io   one reader streaming a large file through the page cache with 1 MiB reads, dropping
       each window it has read (posix_fadvise DONTNEED) so every pass goes to the disk again
       and the page cache keeps turning over;
  mem  one process holding a share of RAM (at most 40% of MemTotal and half of MemAvailable),
       every page written, swept again every second so it stays resident and hot.

`Competitors` is a context manager; the processes also die with the benchmark (PR_SET_PDEATHSIG)
if it is killed hard. Standard library only. Run as `contention.py cpu|io FILE|mem BYTES`.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

MEM_SHARE_MAX = 0.40          # of MemTotal, never more
IO_FILE_MIB = 1024
IO_WINDOW = 64 << 20          # bytes read before they are dropped from the page cache
PAGE = 4096


def meminfo(field: str) -> int:
    """A /proc/meminfo field in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def mem_bytes(share: float) -> int:
    share = min(share, MEM_SHARE_MAX)
    return int(min(meminfo("MemTotal") * share, meminfo("MemAvailable") * 0.5)) // PAGE * PAGE


def make_io_file(path: pathlib.Path, mib: int = IO_FILE_MIB) -> pathlib.Path:
    """A file of real (not sparse) blocks, written once and kept."""
    if path.exists() and path.stat().st_size == mib << 20:
        return path
    tmp = path.with_suffix(".tmp")
    block = bytes(range(256)) * (4096 // 256) * 256          # 1 MiB, not all zeros
    with open(tmp, "wb") as f:
        for _ in range(mib):
            f.write(block)
        os.fsync(f.fileno())
    tmp.rename(path)
    return path


class Competitors:
    """Start the competitors on enter, stop (and reap) them on exit, whatever happened."""

    def __init__(self, io_file: pathlib.Path, *, mem_share: float = MEM_SHARE_MAX,
                 cpus: int | None = None) -> None:
        self.io_file = io_file
        self.mem = mem_bytes(mem_share)
        self.cpus = cpus if cpus is not None else (os.cpu_count() or 1)
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        self.procs.append(subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True))

    def __enter__(self) -> "Competitors":
        try:
            self._start("mem", str(self.mem))
            self._wait_resident(self.procs[0])
            self._start("io", str(self.io_file))
            for _ in range(self.cpus):
                self._start("cpu")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_resident(self, p: subprocess.Popen, timeout: float = 120) -> None:
        """Measurements start once the memory competitor holds all its pages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            if rss_bytes(p.pid) >= self.mem * 0.95:
                return
            time.sleep(0.1)

    def describe(self) -> str:
        mib = self.io_file.stat().st_size >> 20
        return (f"{self.cpus} CPU loop(s), 1 reader streaming {mib} MiB "
                f"through the page cache, {self.mem >> 20} MiB held")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait()
        self.procs.clear()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- the competitors

def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cpu() -> None:
    while True:
        pass


def io(path: str) -> None:
    buf = memoryview(bytearray(1 << 20))
    while True:
        with open(path, "rb", buffering=0) as f:
            fd, start, pos = f.fileno(), 0, 0
            while n := f.readinto(buf):
                pos += n
                if pos - start >= IO_WINDOW:
                    os.posix_fadvise(fd, start, pos - start, os.POSIX_FADV_DONTNEED)
                    start = pos
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def mem(size: int) -> None:
    held = memoryview(bytearray(size))
    pages = len(range(0, size, PAGE))
    value = 1
    while True:
        held[::PAGE] = bytes([value]) * pages       # writes one byte per page: all resident
        value = value % 255 + 1
        time.sleep(1.0)


if __name__ == "__main__":
    _die_with_parent()
    kind = sys.argv[1]
    if kind == "cpu":
        cpu()
    elif kind == "io":
        io(sys.argv[2])
    elif kind == "mem":
        mem(int(sys.argv[2]))
    else:
        sys.exit(f"unknown competitor {kind!r}")
