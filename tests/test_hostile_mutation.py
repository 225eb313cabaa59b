"""Mutated bootstraps and layer files through every verb, under a memory ceiling and a timeout.

Seeds are built here with `nydusfs create` from a small corpus layer: RAFS v5 and v6 bootstraps
with their blob, a layout-B Nydus layer file, and the layer tar itself (plain, gzip, zstd).
Hypothesis mutates one seed (bytes flipped, integers set to edge values, cut, a range copied
elsewhere) and the mutant goes through dump, dump --verify, check and merge (bootstraps) or
create and check (layer tars), each in a forked child of one driver process
(tests/hostile_driver.py) under RLIMIT_AS = MEMORY_CEILING, all within TIME_LIMIT. Every run
must exit 0 or 1, or exit 2 with exactly one line on stderr; never a traceback, a signal, or a
hang. A few mutants that dump accepts are also mounted and read in full.

EXAMPLES examples, derandomized (the same ones in every CI run; NYDUSFS_FUZZ_RANDOM=1 explores
new ones): about a minute on two shared cores.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
import zstandard
from bounded import MEMORY_CEILING, TIME_LIMIT, assert_clean, run
from conftest import is_root
from corpus import Layer, pattern
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = 24
MOUNTS = 3
DERANDOMIZE = os.environ.get("NYDUSFS_FUZZ_RANDOM") != "1"
DRIVER = pathlib.Path(__file__).with_name("hostile_driver.py")
EDGES = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32, 1 << 40,
         (1 << 63) - 1, (1 << 64) - 1]


class Seeds:
    def __init__(self, top: pathlib.Path) -> None:
        self.top = top
        layer = (Layer().dir("etc").file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
                 .file("big", pattern(300_000)).file("empty").symlink("link", "etc/passwd")
                 .dir("d", mode=0o700).file("d/x", b"x" * 5000, xattrs={b"user.k": b"v"}))
        raw = layer.tar()
        self.tar = top / "layer.tar"
        self.tar.write_bytes(raw)
        self.blobs = top / "blobs"
        self.blobs.mkdir()
        self.files: dict[str, pathlib.Path] = {}
        for version in (5, 6):
            boot = top / f"v{version}.boot"
            subprocess.run([sys.executable, "-m", "nydusfs", "create", str(self.tar), "--fs-version",
                            str(version), "--bootstrap", str(boot), "--blob-dir", str(self.blobs)],
                           check=True, capture_output=True)
            self.files[f"v{version}.boot"] = boot
        layer_b = top / "layer-b.nydus"
        subprocess.run([sys.executable, "-m", "nydusfs", "create", str(self.tar), "--layout", "B",
                        "-o", str(layer_b)], check=True, capture_output=True)
        self.files["layer-b.nydus"] = layer_b
        self.files["layer.tar"] = self.tar
        gz = top / "layer.tar.gz"
        gz.write_bytes(gzip.compress(raw))
        self.files["layer.tar.gz"] = gz
        zs = top / "layer.tar.zst"
        zs.write_bytes(zstandard.ZstdCompressor().compress(raw))
        self.files["layer.tar.zst"] = zs


@pytest.fixture(scope="module")
def seeds():
    top = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-hostile-"))
    try:
        yield Seeds(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["flip", "int", "cut", "copy"]))
    pos = draw(st.floats(0, 1, exclude_max=True))
    if kind == "flip":
        return kind, pos, draw(st.integers(1, 8)), draw(st.integers(1, 255))
    if kind == "int":
        return kind, pos, draw(st.sampled_from([2, 4, 8])), draw(st.sampled_from(EDGES))
    if kind == "cut":
        return kind, pos, 0, 0
    return kind, pos, draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(1, 4096))


def mutate(data: bytes, m: tuple) -> bytes:
    kind, pos, a, b = m
    out = bytearray(data)
    at = int(pos * len(out))
    if kind == "flip":
        for i in range(a):
            if at + i < len(out):
                out[at + i] ^= b
    elif kind == "int":
        at -= at % a
        out[at:at + a] = (b & ((1 << (8 * a)) - 1)).to_bytes(a, "little")
        del out[len(data):]
    elif kind == "cut":
        del out[at:]
    else:
        src = int(a * len(out))
        out[at:at + b] = data[src:src + b]
        del out[len(data):]
    return bytes(out)


def verbs(seeds: Seeds, name: str, path: pathlib.Path, work: pathlib.Path) -> list[list[str]]:
    p, blobs, tar = str(path), str(seeds.blobs), str(seeds.tar)
    if name.endswith((".boot", ".nydus")):
        return [["dump", "--json", p], ["dump", "--verify", p, "--blob-dir", blobs],
                ["check", p, "--blob-dir", blobs, "--layers", tar],
                ["merge", p, "--bootstrap", str(work / "merged.boot")]]
    return [["create", p, "-o", str(work / "out.nydus")],
            ["check", str(seeds.files["v6.boot"]), "--blob-dir", blobs, "--layers", p]]


mounted = {"count": 0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None)
@given(st.sampled_from(["v5.boot", "v6.boot", "layer-b.nydus", "layer.tar", "layer.tar.gz",
                        "layer.tar.zst"]), mutations())
def test_mutants_get_a_clean_answer_within_bounds(seeds, name, m):
    seed = seeds.files[name]
    work = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=seeds.top))
    try:
        path = work / name
        path.write_bytes(mutate(seed.read_bytes(), m))
        cases = verbs(seeds, name, path, work)
        proc = subprocess.run([sys.executable, str(DRIVER), str(MEMORY_CEILING), json.dumps(cases)],
                              capture_output=True, timeout=TIME_LIMIT,
                              env=dict(os.environ, MALLOC_ARENA_MAX="2"), check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        results = json.loads(proc.stdout)
        for argv, (code, err) in zip(cases, results, strict=True):
            lines = [line for line in err.splitlines() if line.strip()]
            assert "Traceback" not in err, (argv, m, err[-3000:])
            assert code in (0, 1, 2), (argv, m, code, err[-3000:])
            if code == 2:
                assert len(lines) == 1, (argv, m, lines[:10])
            if argv[0] == "merge" and code != 0:
                assert not (work / "merged.boot").exists(), (argv, m)
            if argv[0] == "create" and code != 0:
                assert not (work / "out.nydus").exists(), (argv, m)
        dumped = results[0][0] == 0 and name.endswith((".boot", ".nydus"))
        if dumped and is_root() and mounted["count"] < MOUNTS:
            mounted["count"] += 1
            mount_and_read(path, seeds.blobs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


READER = """
import os, sys
top = sys.argv[1]
for d, dirs, files in os.walk(top):
    for f in files:
        p = os.path.join(d, f)
        try:
            with open(p, 'rb') as fh:
                while fh.read(1 << 20):
                    pass
        except OSError:
            pass
"""


def mount_and_read(path: pathlib.Path, blobs: pathlib.Path, work: pathlib.Path) -> None:
    mnt = work / "mnt"
    mnt.mkdir()
    pid = work / "pid"
    proc = run("mount", path, mnt, "--blob-dir", blobs, "--pid-file", pid, "--verify-chunks")
    assert_clean(proc)
    if proc.returncode != 0:
        return
    try:
        subprocess.run([sys.executable, "-c", READER, str(mnt)], timeout=TIME_LIMIT, check=True)
        assert os.path.ismount(mnt)      # the server is still up after every request
    finally:
        subprocess.run([sys.executable, "-m", "nydusfs", "umount", str(mnt), "--pid-file", str(pid)],
                       capture_output=True, timeout=60, check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
