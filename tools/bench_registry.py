#!/usr/bin/env python3
"""Range-read throughput from a loopback registry, against peers measured in the same run.

Starts Debian's docker-registry on 127.0.0.1 (tests/registry_helpers.py), pushes an image with
one large incompressible layer with skopeo, then reads that blob:

  local       os.pread of the same blob from a local file (page cache warm), 1 MiB reads
  remote      RegistrySource range reader without cache, 1 MiB Range requests, 1 and 4 threads
  cache-cold  through the on-disk cache (fresh dir, data made durable), 128 KiB reads
  cache-warm  the same again, all from the cache
  cache-cold 20ms  cold through a proxy adding 20 ms per request, without and with the
              background read-ahead
  skopeo      `skopeo copy docker://... dir:...` of the whole image

Prints MB/s medians and ratios to `local` and `skopeo`. Usage: tools/bench_registry.py
[--size-mib 128] [--runs 3].
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv/bin/python"
if VENV_PY.exists() and pathlib.Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
    os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])
sys.path.insert(0, str(ROOT / "tests"))

from registry_fault_proxy import FaultProxy  # noqa: E402
from registry_helpers import make_layout, skopeo_push, start_registry  # noqa: E402

from nydusfs.registry import open_source  # noqa: E402
from nydusfs.registry.cache import BlobCache, CachedRangeReader  # noqa: E402

MIB = 1 << 20


def timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def read_all(pread, size: int, step: int) -> None:  # type: ignore[no-untyped-def]
    for o in range(0, size, step):
        pread(step, o)


def read_all_threads(pread, size: int, step: int, threads: int) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda o: pread(step, o), range(0, size, step)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-bench-registry-"))
    reg = start_registry("anon", work / "registry")
    try:
        import tarfile
        big = work / "big.bin"
        with open(big, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(MIB))
        tar_path = work / "layer.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(big, "big.bin")
        layer = tar_path.read_bytes()
        digests = make_layout(work / "layout", [layer], "v1")
        del layer
        skopeo_push(work / "layout", reg, "bench/big", "v1")
        digest = digests["layers"]
        blob_file = work / "layout/blobs/sha256" / digest[7:]
        size = blob_file.stat().st_size
        ref = f"docker://{reg.host}/bench/big:v1"
        results: dict[str, list[float]] = {}
        proxy = FaultProxy(reg.url)
        proxy.latency = 0.02
        proxied = f"docker://{proxy.host}/bench/big:v1"

        def add(name: str, seconds: float) -> None:
            results.setdefault(name, []).append(size / MIB / seconds)

        for run in range(a.runs):
            with open(blob_file, "rb", buffering=0) as f:
                fd = f.fileno()
                add("local", timed(read_all, lambda n, o: os.pread(fd, n, o), size, MIB))  # noqa: B023
            with open_source(ref) as src:
                r = src.range_reader(digest)
                add("remote 1 thread", timed(read_all, r.pread, size, MIB))
                add("remote 4 threads", timed(read_all_threads, r.pread, size, MIB, 4))
            cache = work / f"cache-{run}"
            with open_source(ref, cache_dir=cache) as src:
                r = src.range_reader(digest)
                add("cache-cold", timed(read_all, r.pread, size, 128 << 10))
                add("cache-warm", timed(read_all, r.pread, size, 128 << 10))
                r.close()
            shutil.rmtree(cache)
            for background in (False, True):
                # 20 ms added per request (tests/registry_fault_proxy.py, in this process: its
                # forwarding competes with the reader for the GIL)
                name = f"cache-cold 20ms {'bg' if background else 'no-bg'}"
                with open_source(proxied, plain_http=True) as src:
                    remote = src.range_reader(digest)
                    r = CachedRangeReader(BlobCache(cache), digest, size, remote.pread,
                                          background=background)
                    add(name, timed(read_all, r.pread, size, 128 << 10))
                    r.close()
                shutil.rmtree(cache)
            out = work / f"skopeo-{run}"
            add("skopeo copy", timed(subprocess.run, [
                "skopeo", "copy", "--quiet", "--src-tls-verify=false", ref, f"dir:{out}"],
                check=True, capture_output=True))
            shutil.rmtree(out)
        local = statistics.median(results["local"])
        sk = statistics.median(results["skopeo copy"])
        print(f"blob {size / MIB:.0f} MiB on docker-registry 127.0.0.1, {a.runs} runs, medians "
              f"({os.cpu_count()} CPUs, shared machine)")
        print(f"{'reader':<18}{'MB/s':>10}{'x local':>10}{'x skopeo':>10}")
        for name, values in results.items():
            m = statistics.median(values)
            print(f"{name:<18}{m:>10.0f}{m / local:>10.2f}{m / sk:>10.2f}")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
