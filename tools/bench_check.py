#!/usr/bin/env python3
"""Quick benchmark of `nydusfs check` against `tar -x` of the same layers.

  tools/bench_check.py [--layers L1 L2 ...] [--workdir DIR] [--runs N] [--no-mount]

Without --layers, a synthetic 4-layer image of about 10k entries is generated (a base of
many small and some large files, then layers with replacements, whiteouts, an opaque directory,
symlinks, hard links and xattrs). The layers are converted with `nydusfs create` + `merge`,
then timed, page cache dropped before each run when running as root:
  floor    tar -xzf of every layer, lowest first, into a fresh directory under --workdir
  check    nydusfs check (contents included)
  mount    nydusfs check --through-mount
Prints the medians and the ratios the issue asks for (check <= 1.5x, mount <= 2.5x).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

NYDUSFS = [sys.executable, "-m", "nydusfs"]
MTIME = 1_700_000_000


def synthetic(out: pathlib.Path, seed: int = 7) -> list[pathlib.Path]:
    rnd = random.Random(seed)
    words = [hashlib.sha256(b"%d" % i).hexdigest()[: rnd.randint(3, 12)].encode() for i in range(4000)]
    text = b" ".join(rnd.choices(words, k=2_000_000))

    def data(n: int) -> bytes:
        off = rnd.randrange(len(text) - n) if n < len(text) else 0
        return (text[off:off + n] * (1 + n // len(text)))[:n]

    def add(tf, name, kind=tarfile.REGTYPE, payload=b"", mode=0o644, link="", xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, MTIME, link
        ti.size = len(payload) if kind == tarfile.REGTYPE else 0
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        tf.addfile(ti, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)

    plans = [(0, 6000), (1, 2500), (2, 1400), (3, 100)]
    paths = []
    for index, count in plans:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            top = f"usr/l{index}"
            add(tf, "usr", tarfile.DIRTYPE, mode=0o755)
            add(tf, top, tarfile.DIRTYPE, mode=0o755)
            for d in range(count // 40):
                add(tf, f"{top}/d{d}", tarfile.DIRTYPE, mode=0o755)
                for f in range(39):
                    size = int(min(32 << 20, rnd.lognormvariate(8.5, 1.8)))
                    add(tf, f"{top}/d{d}/f{f}", payload=data(size),
                        xattrs={"user.k": "v"} if f == 0 else None)
                add(tf, f"{top}/d{d}/link", tarfile.SYMTYPE, link="f1", mode=0o777)
                add(tf, f"{top}/d{d}/hard", tarfile.LNKTYPE, link=f"{top}/d{d}/f2")
            if index:
                lower = f"usr/l{index - 1}"
                for d in range(0, 20):
                    add(tf, f"{lower}/d{d}/.wh.f3")
                    add(tf, f"{lower}/d{d}/f4", payload=data(1000), mode=0o600)
                add(tf, f"{lower}/d21/.wh..wh..opq")
        p = out / f"layer{index}.tar.gz"
        with open(p, "wb") as f:
            subprocess.run(["gzip", "-6", "-n"], input=raw.getvalue(), stdout=f, check=True)
        paths.append(p)
    return paths


def drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


NOTES: list[str] = []


def timed(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    drop_caches()
    t = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
    took = time.perf_counter() - t
    if rc not in ok:
        raise SystemExit(f"{' '.join(cmd[2:4])}... exited {rc}")
    if rc and cmd[3] == "check":
        NOTES.append(f"{' '.join(cmd[3:])[:60]}...: exit {rc} (differences found; still timed)")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="+", help="layer tar(.gz/.zst) files, lowest first (default: synthetic)")
    ap.add_argument("--workdir", default=None, help="where images and tar -x go (default: a temp dir)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (default: 3)")
    ap.add_argument("--no-mount", action="store_true", help="skip --through-mount")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench-check-"))
    work.mkdir(parents=True, exist_ok=True)
    layers = [pathlib.Path(p) for p in args.layers] if args.layers else synthetic(work)
    blobs = work / "layers"
    shutil.rmtree(blobs, ignore_errors=True)
    blobs.mkdir()
    files = []
    for i, layer in enumerate(layers):
        out = work / f"layer{i}.nydus"
        subprocess.run(NYDUSFS + ["create", "-q", str(layer), "-o", str(out)], check=True)
        final = blobs / hashlib.sha256(out.read_bytes()).hexdigest()
        out.rename(final)
        files.append(str(final))
    boot = work / "merged.boot"
    subprocess.run(NYDUSFS + ["merge", *files, "--bootstrap", str(boot)], check=True)
    check = NYDUSFS + ["check", str(boot), "--blob-dir", str(blobs), "--layers", *map(str, layers)]
    samples: dict[str, list[float]] = {"floor": [], "check": [], "mount": []}
    for _ in range(args.runs):
        dest = work / "tar-x"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        t = 0.0
        for layer in layers:  # layer 4 of some images recreates paths tar cannot: ignore its rc
            t += timed(["tar", "-xf", str(layer), "-C", str(dest), "--numeric-owner", "-p",
                        "--xattrs", "--xattrs-include=*"], ok=(0, 2))
        samples["floor"].append(t)
        shutil.rmtree(dest)
        samples["check"].append(timed(check, ok=(0, 1)))
        if not args.no_mount:
            samples["mount"].append(timed(check + ["--through-mount"], ok=(0, 1)))
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    entries = sum(1 for layer in layers for _ in tarfile.open(layer))
    print(f"{len(layers)} layers, {entries} tar entries, {sum(p.stat().st_size for p in layers) / 1e6:.0f} MB "
          f"compressed; medians of {args.runs} runs on {os.cpu_count()} CPUs")
    print(f"  tar -x all layers      {med['floor']:7.2f} s")
    print(f"  check                  {med['check']:7.2f} s   {med['check'] / med['floor']:.2f}x (target <= 1.5x)")
    if "mount" in med:
        print(f"  check --through-mount  {med['mount']:7.2f} s   {med['mount'] / med['floor']:.2f}x (target <= 2.5x)")
    for note in sorted(set(NOTES)):
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
