"""Helpers shared by tools/make-images and tools/bench: paths, commands, setup, timing.

Standard library only, so both scripts run with the system python3 before anything is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

TOOLS = pathlib.Path(__file__).resolve().parent
REPO = TOOLS.parent
CACHE = pathlib.Path(os.environ.get("NYDUSFS_BENCH_CACHE", TOOLS / ".cache"))
OUT = pathlib.Path(os.environ.get("NYDUSFS_BENCH_OUT", TOOLS / "out"))
IMAGES = CACHE / "images"

_apt_updated = False
VERBOSE = True


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, *, check=True, capture=False, env=None, cwd=None, stdin=None, quiet=False, **kw):
    """Run a command (list or shell string); output goes to stderr unless captured."""
    shell = isinstance(cmd, str)
    if not quiet:
        log("$ " + (cmd if shell else shlex.join(str(c) for c in cmd)))
    p = subprocess.run(cmd, shell=shell, check=False, env=env, cwd=cwd, stdin=stdin,
                       stdout=subprocess.PIPE if capture else sys.stderr,
                       stderr=subprocess.PIPE if capture else None, **kw)
    if check and p.returncode != 0:
        err = p.stderr.decode(errors="replace")[-2000:] if capture and p.stderr else ""
        raise RuntimeError(f"command failed ({p.returncode}): {cmd}\n{err}")
    return p


def out(cmd, **kw) -> str:
    return run(cmd, capture=True, quiet=True, **kw).stdout.decode()


def dpkg_installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True)
    return p.returncode == 0 and p.stdout.endswith(b"installed")


def ensure_apt(*pkgs: str) -> float:
    """Install missing Debian packages; returns the seconds it took (0 when nothing was missing)."""
    global _apt_updated
    missing = [p for p in pkgs if not dpkg_installed(p)]
    if not missing:
        return 0.0
    t = time.perf_counter()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        run(["apt-get", "update", "-q"], env=env, check=False)
        _apt_updated = True
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    return time.perf_counter() - t


class Timings:
    """Wall time of each named step, persisted so cached steps still show their first cost."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    @contextlib.contextmanager
    def step(self, name: str):
        log(f"== {name}")
        t = time.perf_counter()
        yield
        self.data[name] = round(time.perf_counter() - t, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        log(f"== {name}: {self.data[name]:.1f} s")

    def show(self) -> None:
        for k, v in self.data.items():
            print(f"  {k:<40} {v:>9.1f} s")


def mark_done(d: pathlib.Path) -> None:
    d.with_name(d.name + ".done").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def is_done(d: pathlib.Path) -> bool:
    return d.exists() and d.with_name(d.name + ".done").exists()


def clear(d: pathlib.Path) -> None:
    """Remove a directory (or file) and its done marker."""
    d.with_name(d.name + ".done").unlink(missing_ok=True)
    if d.is_dir() and not d.is_symlink():
        shutil.rmtree(d)
    elif d.exists() or d.is_symlink():
        d.unlink()


def is_mount(p: pathlib.Path) -> bool:
    target = os.path.realpath(p)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def umount(p: pathlib.Path, lazy_after: float = 5.0) -> None:
    """Unmount whatever is mounted at p (fuse or kernel), falling back to a lazy unmount."""
    deadline = time.monotonic() + lazy_after
    while is_mount(p):
        r = subprocess.run(["umount", str(p)], capture_output=True)
        if r.returncode == 0:
            continue
        subprocess.run(["fusermount", "-u", str(p)], capture_output=True)
        if time.monotonic() > deadline:
            subprocess.run(["umount", "-l", str(p)], capture_output=True)
            break
        time.sleep(0.2)
