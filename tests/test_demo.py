"""The README's first command: `nydusfs demo` runs every step on the built-in sample."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from conftest import have_fuse, is_root


def test_demo_runs_every_step(tmp_path: pathlib.Path) -> None:
    args = [sys.executable, "-m", "nydusfs", "demo", "--workdir", str(tmp_path)]
    if not (is_root() and have_fuse()):
        args.append("--no-mount")
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for step in ("== convert the image", "== check the Nydus image", "== unpack", "== explore",
                 "== convert the next version", "== diff the two versions", "nydusfs demo: done"):
        assert step in r.stdout, step
    assert "1 layers converted, 3 from the cache" in r.stdout
    assert "1 added, 1 removed, 1 changed" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
