#!/usr/bin/env python3
"""What chunk verification costs a mount: read every file through `nydusfs mount` (default:
every chunk checked against its digest) and `nydusfs mount --no-verify`, in the same run.

The image is one layer made from real directories of this machine (default: /usr/lib/python3.11
and /usr/lib/gcc: many small files and a few big binaries, about 175 MB), converted with
`nydusfs create` (RAFS v6, zstd, 1 MiB chunks). Each run mounts afresh (empty chunk cache, no kernel page cache for the
mount) and reads every file with 1 MiB reads; the modes alternate so that drifts of a shared
machine hit both. The blob stays in the host page cache, so the figures are the daemon's CPU
cost (decompression, hashing, FUSE), the case where verification weighs most. Besides the wall
time of the reads, the server's CPU time (user + system, from /proc) is reported: on a shared
machine it varies much less than wall time.

  tools/bench_verify.py [--source DIR]... [--runs N] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
NYDUSFS = [sys.executable, "-m", "nydusfs"]

READ_ALL = r"""
import os, sys, time, json
buf = bytearray(1 << 20); mv = memoryview(buf)
t = time.perf_counter(); n = b = errors = 0
for top, dirs, names in os.walk(sys.argv[1]):
    for name in names:
        p = os.path.join(top, name)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        try:
            with open(p, "rb", buffering=0) as f:
                while k := f.readinto(mv):
                    b += k
            n += 1
        except OSError:
            errors += 1
print(json.dumps({"seconds": time.perf_counter() - t, "files": n, "bytes": b, "errors": errors}))
"""


def run(*args: str) -> None:
    subprocess.run(NYDUSFS + list(args), check=True, cwd=REPO)


def layer(sources: list[str], out: pathlib.Path) -> None:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for src in sources:
            tf.add(src, arcname=src.strip("/"), filter=lambda ti: ti if ti.type != tarfile.CHRTYPE else None)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_through(boot: pathlib.Path, blobs: pathlib.Path, mnt: pathlib.Path, extra: list[str]) -> dict:
    pid_file = mnt.parent / "mount.pid"
    run("mount", str(boot), str(mnt), "--blob-dir", str(blobs), "--pid-file", str(pid_file), *extra)
    try:
        pid = int(pid_file.read_text().split()[0])
        before = cpu_seconds(pid)
        done = subprocess.run([sys.executable, "-c", READ_ALL, str(mnt)], capture_output=True,
                              check=True)
        out = json.loads(done.stdout)
        out["server_cpu"] = cpu_seconds(pid) - before
        return out
    finally:
        run("umount", str(mnt))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", help="directory to put in the layer (repeatable)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--work", help="work directory (default: a temporary one, removed)")
    args = p.parse_args()
    sources = args.source or ["/usr/lib/python3.11", "/usr/lib/gcc"]
    with tempfile.TemporaryDirectory(prefix="nydusfs-bench-verify-", dir=args.work) as tmp:
        wd = pathlib.Path(tmp)
        tar, boot, blobs, mnt = wd / "layer.tar", wd / "image.boot", wd / "blobs", wd / "mnt"
        mnt.mkdir()
        layer(sources, tar)
        run("create", str(tar), "-o", str(wd / "layer.nydus"), "-q")
        run("merge", str(wd / "layer.nydus"), "--bootstrap", str(boot))
        blobs.mkdir()
        os.link(wd / "layer.nydus", blobs / _blob_id(boot))
        modes = {"verify (default)": [], "--no-verify": ["--no-verify"]}
        seconds: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        info = {}
        for i in range(args.runs):
            order = list(modes) if i % 2 == 0 else list(reversed(modes))
            for m in order:
                r = read_through(boot, blobs, mnt, modes[m])
                if r["errors"]:
                    raise SystemExit(f"{m}: {r['errors']} files failed to read")
                seconds[m].append(r["seconds"])
                cpu[m].append(r["server_cpu"])
                info = r
        a, b = (statistics.median(seconds[m]) for m in modes)
        ca, cb = (statistics.median(cpu[m]) for m in modes)
        print(json.dumps({"sources": sources, "files": info["files"], "bytes": info["bytes"],
                          "runs": args.runs, "median_seconds": {m: round(statistics.median(v), 3)
                                                                for m, v in seconds.items()},
                          "all_seconds": {m: [round(x, 3) for x in v] for m, v in seconds.items()},
                          "median_server_cpu": {m: round(statistics.median(v), 3) for m, v in cpu.items()},
                          "all_server_cpu": {m: [round(x, 3) for x in v] for m, v in cpu.items()},
                          "wall_verify_over_no_verify": round(a / b, 3),
                          "cpu_verify_over_no_verify": round(ca / cb, 3),
                          "load_average": os.getloadavg(),
                          "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    return 0


def _blob_id(boot: pathlib.Path) -> str:
    sys.path.insert(0, str(REPO))
    from nydusfs.reader import open_image

    with open_image(boot) as im:
        return im.blobs[0].blob_id


if __name__ == "__main__":
    sys.exit(main())
