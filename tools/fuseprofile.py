"""What a FUSE server did during one workload, measured from outside, the same way for any server.

- Requests: the kernel's `fuse:fuse_request_send` / `fuse:fuse_request_end` tracepoints, in a
  private tracefs instance filtered on the mount's connection: count per opcode, reply bytes
  (for READ: the size of each answer), and time from send to answer.
- The server's threads: CPU time, time spent runnable but waiting for a CPU (schedstat),
  voluntary and involuntary context switches, minor/major page faults (all threads summed).
- Its blob/image reads: bytes asked for (rchar) and bytes that came from the disk rather than
  the page cache (read_bytes).

Standard library only; needs root and tracefs (mounted here if it is not).
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import statistics
import subprocess

TRACEFS = pathlib.Path("/sys/kernel/tracing")
OPCODES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 5: "READLINK", 14: "OPEN", 15: "READ",
           17: "STATFS", 18: "RELEASE", 22: "GETXATTR", 23: "LISTXATTR", 25: "FLUSH", 26: "INIT",
           27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR", 34: "ACCESS", 38: "DESTROY",
           42: "BATCH_FORGET", 44: "READDIRPLUS", 46: "LSEEK", 52: "STATX"}
OUT_HEADER = 16
_LINE = re.compile(r"\s(\d+\.\d+): fuse_request_(send|end): connection \d+ req (\d+) "
                   r"(?:opcode (\d+) \(\w+\) len \d+|len (\d+) error (-?\d+))")


def _tracefs() -> pathlib.Path:
    if not (TRACEFS / "instances").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True)
    if not (TRACEFS / "events/fuse/fuse_request_send").is_dir():
        raise RuntimeError("no fuse tracepoints (kernel without fuse:fuse_request_send)")
    return TRACEFS


class RequestTrace:
    """FUSE requests of one mount while the context is open."""

    def __init__(self, mountpoint: os.PathLike | str, buffer_kb: int = 65536) -> None:
        st = os.stat(mountpoint)
        self.connection = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)   # kernel dev_t
        self.buffer_kb = buffer_kb
        self.dir: pathlib.Path | None = None
        self.text = ""

    def __enter__(self) -> "RequestTrace":
        root = _tracefs()
        self.dir = root / "instances" / f"fuseprofile-{os.getpid()}"
        self.dir.mkdir(exist_ok=True)
        try:
            (self.dir / "buffer_size_kb").write_text(str(self.buffer_kb))
            for ev in ("fuse_request_send", "fuse_request_end"):
                d = self.dir / "events/fuse" / ev
                (d / "filter").write_text(f"connection == {self.connection}")
                (d / "enable").write_text("1")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.dir is not None
        try:
            for ev in ("fuse_request_send", "fuse_request_end"):
                (self.dir / "events/fuse" / ev / "enable").write_text("0")
            self.text = (self.dir / "trace").read_text(errors="replace")
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.dir is not None:
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def summary(self) -> dict:
        sent: dict[int, tuple[float, int]] = {}
        per: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
        lost = "LOST" in self.text
        for m in _LINE.finditer(self.text):
            ts, kind, req = float(m[1]), m[2], int(m[3])
            if kind == "send":
                sent[req] = (ts, int(m[4]))
            elif req in sent:
                t0, code = sent.pop(req)
                per[OPCODES.get(code, str(code))].append((ts - t0, max(0, int(m[5]) - OUT_HEADER)))
        out: dict = {"lost_events": lost, "unanswered": len(sent), "ops": {}}
        for op, v in sorted(per.items(), key=lambda kv: -len(kv[1])):
            lat = sorted(x[0] for x in v)
            out["ops"][op] = {"count": len(v), "bytes": sum(x[1] for x in v),
                              "median_us": round(statistics.median(lat) * 1e6, 1),
                              "p90_us": round(lat[int(0.9 * (len(lat) - 1))] * 1e6, 1),
                              "total_s": round(sum(lat), 4)}
            if op == "READ":
                sizes = collections.Counter(_size_class(x[1]) for x in v)
                out["ops"][op]["sizes"] = dict(sorted(sizes.items(), key=lambda kv: _KIB[kv[0]]))
        return out


_CLASSES = [(4 << 10, "<=4K"), (32 << 10, "<=32K"), (128 << 10, "<=128K"), (512 << 10, "<=512K"),
            (1 << 20, "<=1M")]
_KIB = {name: i for i, (_, name) in enumerate(_CLASSES)} | {">1M": len(_CLASSES)}


def _size_class(n: int) -> str:
    for limit, name in _CLASSES:
        if n <= limit:
            return name
    return ">1M"


def _status_field(status: str, name: str) -> int:
    m = re.search(rf"^{name}:\s+(\d+)", status, re.MULTILINE)
    return int(m[1]) if m else 0


def process_stats(pid: int) -> dict:
    """Counters of a process and all its live threads (CPU and wait in seconds)."""
    run = wait = 0
    vol = invol = threads = 0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            r, w, _ = (task / "schedstat").read_text().split()
            status = (task / "status").read_text()
        except (OSError, ValueError):
            continue
        threads += 1
        run += int(r)
        wait += int(w)
        vol += _status_field(status, "voluntary_ctxt_switches")
        invol += _status_field(status, "nonvoluntary_ctxt_switches")
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    io = dict(line.split(": ") for line in pathlib.Path(f"/proc/{pid}/io").read_text().splitlines())
    return {"threads": threads, "cpu_s": run / 1e9, "runqueue_wait_s": wait / 1e9,
            "voluntary_switches": vol, "involuntary_switches": invol,
            "minor_faults": int(fields[7]), "major_faults": int(fields[9]),
            "read_calls": int(io["syscr"]), "read_bytes_asked": int(io["rchar"]),
            "read_bytes_from_disk": int(io["read_bytes"])}


def delta(before: dict, after: dict) -> dict:
    return {k: (after[k] - before[k] if k != "threads" else after[k]) for k in after}
