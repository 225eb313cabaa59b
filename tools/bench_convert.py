#!/usr/bin/env python3
"""Measure `nydusfs convert` against its peers in the same run, on one OCI image layout.

  full       convert --no-cache -j N of the image (wall, peak RSS)
  sequential `nydusfs create` of each layer (layout B, nydusify's options) one after the other,
             then `nydusfs merge`: the work convert does, without parallel layers
  floor      `gzip -dc | zstd -3 -T2` over all layers, one after the other
  changed    convert of the image after its first layers were converted (layer cache warm with
             all but the last layer)
  mount      `nydusfs mount oci:OUT:TAG` until ready, bootstrap cache cold then warm; the peer
             is the same bootstrap mounted as a file with --blob-dir
  check      `nydusfs check SRC NYDUS` against `tar -x` of the source layers
  registry   `nydusfs convert docker://SRC docker://DST` on a loopback registry (Debian's
             docker-registry, anonymous, fresh storage each round, the image pushed by skopeo),
             against what it replaces: `skopeo copy` to a layout + local convert + `skopeo copy`
             back to the registry; both convert every layer (--no-cache) with the same -j

Usage: tools/bench_convert.py [--image oci:DIR:TAG] [--base-tag TAG] [-j N] [--repeat N]
                              [--only registry | --no-registry]
Default image: $NYDUSFS_BENCH_CACHE/images/realistic/oci (tools/make-images realistic, default
tools/.cache), tags l3/final.
Medians are printed with the ratios; samples go to tools/out/bench-convert-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
NYDUSFS = [str(REPO / ".venv/bin/python"), "-m", "nydusfs"]


def timed(cmd: list[str] | str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """(seconds, peak RSS in MB of the process tree's largest process)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), env={**os.environ, **(env or {})},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if status != 0:
        raise SystemExit(f"failed ({status}): {cmd}\n{err}")
    return seconds, usage.ru_maxrss // 1024


def layers_of(layout: pathlib.Path, tag: str) -> list[pathlib.Path]:
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_text())
    return [layout / "blobs/sha256" / d["digest"][7:] for d in manifest["layers"]]


def drop_caches() -> None:
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = pathlib.Path(os.environ.get("NYDUSFS_BENCH_CACHE", REPO / "tools/.cache"))
    ap.add_argument("--image", default=f"oci:{cache / 'images/realistic/oci'}:final")
    ap.add_argument("--base-tag", default="l3", help="a tag sharing all but the last layer (default l3)")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=2)
    rows = ap.add_mutually_exclusive_group()
    rows.add_argument("--only", choices=["registry"], help="measure only these rows")
    rows.add_argument("--no-registry", action="store_true", help="leave out the registry rows")
    args = ap.parse_args()
    _, path, tag = args.image.split(":", 2)
    layout = pathlib.Path(path)
    layers = layers_of(layout, tag)
    work = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-bench-convert-"))
    samples: dict[str, list[float]] = {}
    rss: dict[str, int] = {}

    def add(name: str, sec: float, mb: int = 0) -> None:
        samples.setdefault(name, []).append(sec)
        rss[name] = max(rss.get(name, 0), mb)
        print(f"  {name}: {sec:.2f} s, peak RSS {mb} MB", file=sys.stderr, flush=True)

    try:
        for r in range(args.repeat):
            print(f"round {r + 1}", file=sys.stderr)
            if not args.no_registry:
                registry_rows(args.image, work / f"registry{r}", args.j, add)
            if args.only == "registry":
                continue
            out = work / f"out{r}"
            drop_caches()
            add("full convert", *timed(NYDUSFS + ["convert", args.image, f"oci:{out}:t", "--no-cache",
                                                  "-j", str(args.j), "--no-progress",
                                                  "--cache-dir", str(work / f"cache{r}")]))
            seq = work / f"seq{r}"
            seq.mkdir()
            total, peak = 0.0, 0
            drop_caches()
            names = []
            for i, layer in enumerate(layers):
                s, mb = timed(f"echo / | {' '.join(NYDUSFS)} create {layer} -o {seq}/l{i} --layout B "
                              f"--whiteout-spec none --prefetch-policy fs -q")
                digest = subprocess.run(["sha256sum", f"{seq}/l{i}"], capture_output=True,
                                        text=True, check=True).stdout.split()[0]
                os.rename(seq / f"l{i}", seq / digest)
                names.append(str(seq / digest))
                total, peak = total + s, max(peak, mb)
            s, mb = timed(f"echo / | {' '.join(NYDUSFS)} merge --prefetch-policy fs --bootstrap "
                          f"{seq}/image.boot {' '.join(names)}")
            add("sequential create+merge", total + s, max(peak, mb))
            drop_caches()
            total = 0.0
            for layer in layers:
                s, _ = timed(f"gzip -dc {layer} | zstd -3 -T2 -q -c > /dev/null")
                total += s
            add("gzip -dc | zstd -3 -T2", total)
            cache = work / f"changed{r}"
            timed(NYDUSFS + ["convert", f"oci:{layout}:{args.base_tag}", f"oci:{work / f'base{r}'}:t",
                             "--no-progress", "--cache-dir", str(cache), "-j", str(args.j)])
            drop_caches()
            add("convert, 1 layer changed", *timed(NYDUSFS + ["convert", args.image,
                                                               f"oci:{work / f'base{r}'}:t2", "--no-progress",
                                                               "--cache-dir", str(cache), "-j", str(args.j)]))
            mnt = work / "mnt"
            mnt.mkdir(exist_ok=True)
            env = {"NYDUSFS_CACHE_DIR": str(work / f"bootcache{r}")}
            for label in ("mount ready, bootstrap not cached", "mount ready, bootstrap cached"):
                add(label, *timed(NYDUSFS + ["mount", f"oci:{out}:t", str(mnt)], env))
                subprocess.run(NYDUSFS + ["umount", str(mnt)], check=True, capture_output=True)
            # the peer: the same bootstrap as a plain file, blobs from the layout's blob dir
            boot = next((work / f"bootcache{r}" / "bootstraps").glob("*.boot"))
            add("mount ready, bootstrap file", *timed(NYDUSFS + ["mount", str(boot), str(mnt), "--blob-dir",
                                                                 str(out / "blobs/sha256")]))
            subprocess.run(NYDUSFS + ["umount", str(mnt)], check=True, capture_output=True)
            drop_caches()
            add("check SRC NYDUS", *timed(NYDUSFS + ["check", args.image, f"oci:{out}:t", "--no-progress"],
                                          env))
            untar = work / f"untar{r}"
            untar.mkdir()
            drop_caches()
            total = 0.0
            for layer in layers:
                s, _ = timed(f"gzip -dc {layer} | tar -x -C {untar} 2>/dev/null || true")
                total += s
            add("tar -x of the layers", total)
            shutil.rmtree(untar)
    finally:
        subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\n{'measurement':40} {'median s':>9} {'peak MB':>8}")
    for k, v in med.items():
        print(f"{k:40} {v:9.2f} {rss[k] or '':>8}")
    if REG_OURS in med:
        print(f"\nregistry -> registry / skopeo + convert + skopeo: {med[REG_OURS] / med[REG_PEER]:.2f}x")
    if args.only == "registry":
        return _save(args, samples, rss)
    full = med["full convert"]
    print(f"\nconvert / sequential create+merge: {full / med['sequential create+merge']:.2f}x")
    print(f"convert / gzip -dc | zstd -3 -T2:   {full / med['gzip -dc | zstd -3 -T2']:.2f}x")
    print(f"1 layer changed / full convert:     {med['convert, 1 layer changed'] / full:.2f}x")
    print(f"check / tar -x:                     {med['check SRC NYDUS'] / med['tar -x of the layers']:.2f}x")
    print(f"mount ref (cached) / mount file:    "
          f"{med['mount ready, bootstrap cached'] / med['mount ready, bootstrap file']:.2f}x")
    return _save(args, samples, rss)


REG_OURS = "convert registry -> registry"
REG_PEER = "skopeo pull + convert + skopeo push"


def registry_rows(image: str, work: pathlib.Path, jobs: int, add) -> None:  # type: ignore[no-untyped-def]
    """One round of the registry rows on a fresh loopback registry (nothing in it but the
    source image, so neither side finds blobs to skip or mount from an earlier round)."""
    sys.path.insert(0, str(REPO / "tests"))
    from registry_helpers import start_registry

    reg = start_registry("anon", work / "registry")
    try:
        src = f"docker://{reg.host}/bench/src:v1"
        timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", image, src])
        env = {"NYDUSFS_CACHE_DIR": str(work / "cache")}
        common = ["--no-progress", "--no-cache", "-j", str(jobs)]
        drop_caches()
        add(REG_OURS, *timed(NYDUSFS + ["convert", src, f"docker://{reg.host}/bench/ours:v1", *common], env))
        drop_caches()
        t0 = time.monotonic()
        _, a = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"oci:{work / 'pull'}:v1"])
        _, b = timed(NYDUSFS + ["convert", f"oci:{work / 'pull'}:v1", f"oci:{work / 'out'}:v1", *common], env)
        _, c = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{work / 'out'}:v1",
                      f"docker://{reg.host}/bench/peer:v1"])
        add(REG_PEER, time.monotonic() - t0, max(a, b, c))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _save(args: argparse.Namespace, samples: dict[str, list[float]], rss: dict[str, int]) -> int:
    outdir = REPO / "tools/out"
    outdir.mkdir(exist_ok=True)
    name = outdir / f"bench-convert-{time.strftime('%Y%m%d-%H%M%S')}.json"
    name.write_text(json.dumps({"image": args.image, "jobs": args.j, "cpus": os.cpu_count(),
                                "samples": samples, "peak_rss_mb": rss}, indent=1))
    print(f"samples: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
