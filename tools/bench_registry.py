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

Prints MB/s medians and ratios to `local` and `skopeo`.

`--mount` measures `nydusfs mount docker://...` instead, on the realistic image of
$NYDUSFS_BENCH_CACHE (tools/make-images) when it is there, else on a synthetic one; the image is
converted to RAFS v6 and pushed with skopeo, then (fresh caches each time):

  ready       spawn of `nydusfs mount` to the end of the first `ls` (registry: manifest,
              config, bootstrap layer), against the mount of the same image from an OCI layout
  cat         one small file right after
  read all    every file read cold by 4 threads, from the registry against local blobs
  prefetch    --prefetch-all until the log says done, against `skopeo copy docker:// dir:`
  20ms        through a proxy adding 20 ms per request: mount + `ls -R` + 10 small files

Usage: tools/bench_registry.py [--size-mib 128] [--runs 3] [--mount]
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
    p.add_argument("--mount", action="store_true", help="measure mount docker://... instead")
    a = p.parse_args()
    if a.mount:
        return mount_bench(a.runs)
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


# --- nydusfs mount docker://... -----------------------------------------------------------------

NYDUSFS = [sys.executable, "-m", "nydusfs"]
BENCH_CACHE = pathlib.Path(os.environ.get("NYDUSFS_BENCH_CACHE", ROOT / "tools/.cache"))
PREFETCH_TIMEOUT = 900     # seconds: a prefetch that never ends stops the run


def _run(*args: object, env: dict[str, str] | None = None) -> None:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, args))}: {r.stderr.strip()}")


def _source_image(work: pathlib.Path) -> tuple[str, str]:
    """(oci: reference of an OCI image, description)."""
    realistic = BENCH_CACHE / "images/realistic"
    if (BENCH_CACHE / "images/realistic.done").exists():
        return f"oci:{realistic / 'oci'}:final", "realistic image (tools/make-images)"
    from corpus import Layer  # type: ignore[import-not-found]
    from imagekit import umoci_image  # type: ignore[import-not-found]

    big, small = Layer().dir("data"), Layer().dir("etc")
    for i in range(8):
        big.file(f"data/blob{i}.bin", os.urandom(16 * MIB))
    for i in range(2000):
        small.file(f"etc/f{i:04d}.conf", (f"key{i} = value\n" * (1 + i % 100)).encode())
    return umoci_image(work / "synthetic", "v1", [big, small], work / "t"), \
        "synthetic image (8 x 16 MiB random files, 2000 small files)"


class _Mounted:
    def __init__(self, ref: str, mp: pathlib.Path, cache: pathlib.Path, *extra: str) -> None:
        self.mp, self.log = mp, mp.with_suffix(".log")
        mp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "NYDUSFS_CACHE_DIR": str(cache)}
        self.start = time.perf_counter()
        subprocess.run([*NYDUSFS, "mount", ref, str(mp), "--log-file", str(self.log), *extra],
                       check=True, env=self.env, capture_output=True)

    def __enter__(self) -> _Mounted:
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*NYDUSFS, "umount", str(self.mp)], check=False, capture_output=True)


def _walk(root: pathlib.Path) -> list[pathlib.Path]:
    files = []
    for d, _, names in os.walk(root):
        for n in names:
            p = pathlib.Path(d, n)
            if p.is_file() and not p.is_symlink():
                files.append(p)
    return files


def _read_all(files: list[pathlib.Path]) -> int:
    def one(p: pathlib.Path) -> int:
        with open(p, "rb") as f:
            return sum(len(b) for b in iter(lambda: f.read(MIB), b""))
    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, files))


def mount_bench(runs: int) -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-bench-mount-"))
    reg = start_registry("anon", work / "registry")
    proxy = None
    try:
        src, what = _source_image(work)
        t = time.perf_counter()
        _run(*NYDUSFS, "convert", src, f"oci:{work / 'nydus'}:v6", "--no-progress",
             env={"NYDUSFS_CACHE_DIR": str(work / "convert-cache")})
        convert_s = time.perf_counter() - t
        _run("skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{work / 'nydus'}:v6", f"docker://{reg.host}/bench/app:v6")
        remote = f"docker://{reg.host}/bench/app:v6"
        local = f"oci:{work / 'nydus'}:v6"
        proxy = FaultProxy(reg.url)
        proxy.latency = 0.02
        slow = f"docker://{proxy.host}/bench/app:v6"
        blob_bytes = sum(p.stat().st_size for p in (work / "nydus/blobs/sha256").iterdir())
        results: dict[str, list[float]] = {}

        def add(name: str, value: float) -> None:
            results.setdefault(name, []).append(value)

        n = 0

        def fresh() -> pathlib.Path:
            nonlocal n
            n += 1
            return work / f"run{n}"

        with _Mounted(local, work / "probe", fresh() / "c") as m:
            files = _walk(m.mp)
            small = sorted((p for p in files if 0 < p.stat().st_size < 4096),
                           key=lambda p: str(p))[::37][:10]
            small_rel = [p.relative_to(m.mp) for p in small]
            total = sum(p.stat().st_size for p in files)
        for _ in range(runs):
            for name, ref in (("local", local), ("registry", remote)):
                d = fresh()
                mt = _Mounted(ref, d / "mnt", d / "c", *(["--cache-dir", str(d / "blobs")]
                                                          if ref == remote else []))
                with mt:
                    os.listdir(mt.mp)
                    add(f"ready {name}", time.perf_counter() - mt.start)
                    t = time.perf_counter()
                    (mt.mp / small_rel[0]).read_bytes()
                    add(f"cat {name}", time.perf_counter() - t)
                    t = time.perf_counter()
                    _read_all([mt.mp / p.relative_to(work / "probe") for p in files])
                    add(f"read all {name}", total / MIB / (time.perf_counter() - t))
            d = fresh()
            with _Mounted(slow, d / "mnt", d / "c", "--cache-dir", str(d / "blobs")) as mt:
                for _dir, _dirs, names in os.walk(mt.mp):
                    for nm in names:
                        os.lstat(os.path.join(_dir, nm))
                for p in small_rel:
                    (mt.mp / p).read_bytes()
                add("20ms: mount + ls -R + 10 small files", time.perf_counter() - mt.start)
        for _ in range(max(1, runs // 2)):
            d = fresh()
            with _Mounted(remote, d / "mnt", d / "c", "--cache-dir", str(d / "blobs"),
                          "--prefetch-all") as mt:
                deadline = time.monotonic() + PREFETCH_TIMEOUT
                while "prefetch-all done" not in mt.log.read_text():
                    if time.monotonic() > deadline:
                        raise SystemExit(f"--prefetch-all not done after {PREFETCH_TIMEOUT} s; "
                                         f"log:\n{mt.log.read_text()[-2000:]}")
                    time.sleep(0.05)
                add("prefetch-all", time.perf_counter() - mt.start)
            t = time.perf_counter()
            _run("skopeo", "copy", "--quiet", "--src-tls-verify=false", remote, f"dir:{d / 'dir'}")
            add("skopeo copy dir:", time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"{what}: {len(files)} files, {total / MIB:.0f} MiB of file data, "
              f"{blob_bytes / MIB:.0f} MiB of blobs (RAFS v6, converted in {convert_s:.0f} s); "
              f"docker-registry on 127.0.0.1; medians of {runs} runs ({os.cpu_count()} CPUs, "
              "shared machine)")
        rows = [("mount ready (first ls)", f"{med['ready registry']:.2f} s",
                 f"local oci: {med['ready local']:.2f} s"),
                ("cat one small file after", f"{med['cat registry'] * 1000:.0f} ms",
                 f"local oci: {med['cat local'] * 1000:.0f} ms"),
                ("read every file, cold", f"{med['read all registry']:.0f} MB/s",
                 f"local blobs: {med['read all local']:.0f} MB/s = "
                 f"{med['read all registry'] / med['read all local']:.2f}x"),
                ("--prefetch-all to done", f"{med['prefetch-all']:.1f} s",
                 f"skopeo copy dir: {med['skopeo copy dir:']:.1f} s = "
                 f"{med['prefetch-all'] / med['skopeo copy dir:']:.2f}x"),
                ("20 ms latency: mount+ls -R+10 files",
                 f"{med['20ms: mount + ls -R + 10 small files']:.2f} s", "")]
        for row in rows:
            print(f"  {row[0]:<38}{row[1]:>12}   {row[2]}")
    finally:
        if proxy is not None:
            proxy.close()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
