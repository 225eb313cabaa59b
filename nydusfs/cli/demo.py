"""`nydusfs demo`: the whole job on the built-in sample image, with every command shown."""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from .. import sample
from ..format.choices import FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor

HELP = "run create, merge, dump, check and mount on the built-in sample image"
DESCRIPTION = """\
Write the three layer tars of the built-in sample image (gzip, as a registry serves them), then
run the real commands on them and show each one: `create` for every layer (a Nydus layer file
named by its sha256 digest, so the directory of layers is the blob directory), `merge` into the
final bootstrap, `dump` of the result, `check` against the original layers, and - when FUSE is
available - `mount`, a look at the mounted tree, `check --mounted` and `umount`.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", metavar="DIR",
                   help="where to write the sample and the image (default: a new temporary directory, kept)")
    p.add_argument("--fs-version", type=int, choices=FS_VERSIONS, default=6, help="RAFS version (default: 6)")
    p.add_argument("--compressor", choices=Compressor.values(WRITABLE_COMPRESSORS), default=Compressor.ZSTD,
                   help="chunk compression (default: zstd)")
    p.add_argument("--no-mount", action="store_true", help="skip the FUSE mount steps")
    p.set_defaults(run=run)


def _step(title: str, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    shown = " ".join(shlex.quote(a) for a in ["nydusfs"] + argv)
    print(f"\n== {title}\n$ {shown}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "nydusfs"] + argv, **kw)
    print(f"   ({time.monotonic() - t0:.2f} s, exit {proc.returncode})", flush=True)
    return proc


def _must(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"nydusfs demo: {what} failed (exit {proc.returncode})")


def run(args: argparse.Namespace) -> int:
    work = args.workdir or tempfile.mkdtemp(prefix="nydusfs-demo-")
    os.makedirs(work, exist_ok=True)
    tars_dir = os.path.join(work, "oci-layers")
    nydus_dir = os.path.join(work, "nydus-layers")
    os.makedirs(tars_dir, exist_ok=True)
    os.makedirs(nydus_dir, exist_ok=True)
    print(f"nydusfs demo: working in {work}")

    import gzip

    tars = []
    for i, (name, raw) in enumerate(sample.layers(), 1):
        path = os.path.join(tars_dir, f"{i}-{name}.tar.gz")
        with open(path, "wb") as f:
            f.write(gzip.compress(raw, mtime=0))
        tars.append(path)
    print(f"sample: {len(tars)} OCI layers written to {tars_dir}")

    layer_files = []
    for path in tars:
        tmp = os.path.join(nydus_dir, "building.tmp")
        proc = _step(f"create {os.path.basename(path)}",
                     ["create", path, "-o", tmp, "--fs-version", str(args.fs_version),
                      "--compressor", args.compressor, "--whiteout-spec", "none", "-q"])
        _must(proc, "create")
        with open(tmp, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        final = os.path.join(nydus_dir, digest)
        os.replace(tmp, final)
        print(f"   -> {final}")
        layer_files.append(final)

    boot = os.path.join(work, "image.boot")
    _must(_step("merge the layer bootstraps (lowest first)", ["merge", *layer_files, "--bootstrap", boot]),
          "merge")
    _must(_step("dump one inode of the merged image, with its chunks",
                ["dump", boot, "--blob-dir", nydus_dir, "--path", "/usr/bin/tool"]), "dump")
    proc = _step("check the image against the original OCI layers",
                 ["check", boot, "--blob-dir", nydus_dir, "--layers", *tars])
    _must(proc, "check")
    if not args.no_mount and os.path.exists("/dev/fuse"):
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt, exist_ok=True)
        proc = _step("mount (read-only FUSE, returns when ready)",
                     ["mount", boot, mnt, "--blob-dir", nydus_dir])
        _must(proc, "mount")
        try:
            print(f"\n$ ls -la {mnt}/usr/bin {mnt}/srv/big-ids")
            subprocess.run(["ls", "-la", f"{mnt}/usr/bin", f"{mnt}/srv/big-ids"])
            _must(_step("check what the kernel shows through the mount",
                        ["check", boot, "--mounted", mnt, "--layers", *tars]), "check --mounted")
        finally:
            _step("umount", ["umount", mnt])
    print(f"\nnydusfs demo: done; everything is in {work}")
    return 0
