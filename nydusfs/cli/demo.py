"""`nydusfs demo`: the whole job on the built-in sample image, with every command shown."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from .. import sample
from ..format.choices import FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor

HELP = "convert, check, dump, mount, unpack, explore and diff the built-in sample image"
DESCRIPTION = """\
Write the built-in sample image as an OCI image layout (three gzip layers with whiteouts, an
opaque directory, hard links, devices, xattrs and a non-UTF-8 name), then run the real commands
on it by reference and show each one: `convert` into a Nydus image, `check` of the Nydus image
against its source, `dump` of one inode, and - when FUSE is available - `mount`, a look at the
mounted tree, `check --through-mount` and `umount`; `unpack`; `explore --report`; and last a
second version of the sample (one layer more) converted into the same layout (only the new
layer converts) and `diff`ed against the first, with the update cost. The layer cache and the
bootstrap cache live in the work directory.
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
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="nydusfs-demo-"))
    os.makedirs(work, exist_ok=True)
    os.environ["NYDUSFS_CACHE_DIR"] = os.path.join(work, "cache")  # inherited by every step
    print(f"nydusfs demo: working in {work}")
    src = sample.write_layout(os.path.join(work, "sample"), "latest")
    nydus = f"oci:{os.path.join(work, 'nydus')}:latest"
    print(f"sample: an OCI image layout of {len(sample.layers())} layers: {src}")

    _must(_step("convert the image into a Nydus image (one Nydus blob per layer, merged bootstrap)",
                ["convert", src, nydus, "--fs-version", str(args.fs_version),
                 "--compressor", args.compressor, "--no-progress"]), "convert")
    _must(_step("check the Nydus image against its source (manifest, bootstrap, config, filesystem)",
                ["check", src, nydus]), "check")
    _must(_step("dump one inode of the Nydus image, with its chunks",
                ["dump", nydus, "--path", "/usr/bin/tool"]), "dump")
    if not args.no_mount and os.path.exists("/dev/fuse"):
        mnt = os.path.join(work, "mnt")
        os.makedirs(mnt, exist_ok=True)
        _must(_step("mount (read-only FUSE, blobs read in place from the layout)",
                    ["mount", nydus, mnt]), "mount")
        try:
            print(f"\n$ ls -la {mnt}/usr/bin {mnt}/srv/big-ids")
            subprocess.run(["ls", "-la", f"{mnt}/usr/bin", f"{mnt}/srv/big-ids"])
            _must(_step("check what the kernel shows through the mount",
                        ["check", src, nydus, "--through-mount"]), "check --through-mount")
        finally:
            _step("umount", ["umount", mnt])
    if importlib.util.find_spec("nydusfs.cli.unpack") is not None:
        out = os.path.join(work, "unpacked.tar")
        _must(_step("unpack the merged tree into one OCI layer tar", ["unpack", nydus, "-o", out]),
              "unpack")
    _must(_step("explore: what each layer did, wasted bytes, dedup (as tables)",
                ["explore", nydus, "--report", "--top", "5"]), "explore")
    src2 = sample.write_layout(os.path.join(work, "sample"), "v2", version=2)
    nydus2 = f"oci:{os.path.join(work, 'nydus')}:v2"
    _must(_step("convert the next version (one layer more: only that layer is converted)",
                ["convert", src2, nydus2, "--fs-version", str(args.fs_version),
                 "--compressor", args.compressor, "--no-progress"]), "convert v2")
    proc = _step("diff the two versions: what changed, and the bytes a node holding the first fetches",
                 ["diff", nydus, nydus2])
    if proc.returncode != 1:
        raise SystemExit(f"nydusfs demo: diff should find the update (exit {proc.returncode})")
    print(f"\nnydusfs demo: done; everything is in {work}")
    return 0
