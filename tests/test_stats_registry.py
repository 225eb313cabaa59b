"""`nydusfs stats` of a docker:// mount on a real registry (Debian's docker-registry), read
through the fault proxy of tests/registry_fault_proxy.py with no fault switched on: the
requests and bytes the mount counts per blob are those the proxy saw on the wire."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from registry_fault_proxy import FaultProxy
from registry_helpers import Registry

from conftest import needs_fuse, needs_root
from corpus import Layer, pattern
from imagekit import nydusfs, umoci_image

pytest_plugins = ["registry_fixtures"]
pytestmark = [needs_root, needs_fuse]

BIG = pattern(3_500_000, 21)        # four 1 MiB chunks, in its own layer
SMALL = {"etc/hostname": b"stats\n", "etc/motd": pattern(20_000, 22), "bin/sh": pattern(90_000, 23)}


@pytest.fixture
def proxy(anon_registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(anon_registry.url)
    try:
        yield p
    finally:
        p.close()


def _stats_json(m) -> dict:
    r = subprocess.run([sys.executable, "-m", "nydusfs", "stats", str(m.path), "--pid-file",
                        str(m.pid_file), "--json"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _settled(m) -> dict:
    """Stats once the registry counters stop moving (a background read-ahead may still be
    running right after the reads)."""
    last = _stats_json(m)
    for _ in range(200):
        time.sleep(0.05)
        now = _stats_json(m)
        if [b.get("registry") for b in now["blobs"]] == [b.get("registry") for b in last["blobs"]]:
            return now
        last = now
    raise AssertionError("the registry counters never settled")


def _wire(proxy: FaultProxy, hexdigest: str) -> tuple[int, int]:
    """Requests for a blob and the bytes of the ranges the registry answered, from the log."""
    entries = proxy.requests(contains=f"/blobs/sha256:{hexdigest}")
    nbytes = 0
    for e in entries:
        if e["method"] == "GET" and e["status"] == 206:
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", e["range"]).groups())
            nbytes += b - a + 1
    return len(entries), nbytes


def test_registry_counts_match_the_wire(tmp_path, monkeypatch, anon_registry, proxy, mounts):
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "cache"))
    layers = [Layer().file("data/big.bin", BIG), Layer()]
    for name, data in SMALL.items():
        layers[1].file(name, data)
    src = umoci_image(tmp_path / "src", "v1", layers, tmp_path / "work")
    pushed = f"docker://{anon_registry.host}/stats/app:v1"
    r = nydusfs("convert", src, pushed, "--no-progress")
    assert r.returncode == 0, r.stderr
    m = mounts.mount(f"docker://{proxy.host}/stats/app:v1", "--no-prefetch")
    with open(m.path / "data/big.bin", "rb") as f:
        f.seek(2_200_000)
        assert f.read(10_000) == BIG[2_200_000:2_210_000]
    assert (m.path / "etc/motd").read_bytes() == SMALL["etc/motd"]
    doc = _settled(m)
    assert doc["registry"] is True
    assert [f["path"] for f in doc["first_reads"]] == ["/data/big.bin", "/etc/motd"]
    data_blobs = [b for b in doc["blobs"] if b["index"] is not None]
    assert len(data_blobs) == 2
    for b in doc["blobs"]:
        requests, nbytes = _wire(proxy, b["blob_id"])
        assert b["registry"]["requests"] == requests, (b, proxy.log)
        assert b["registry"]["errors"] == b["registry"]["retries"] == 0
        if b["index"] is not None:       # range reads: exactly the bytes the registry sent
            assert b["registry"]["bytes"] == nbytes, (b, proxy.log)
            assert nbytes > 0 and b["chunk_misses"] >= 1
    # everything the mount asked (ping, manifest, config, bootstrap layer, ranges) went by;
    # the one attempt that did not is the TLS probe of a loopback registry (before falling
    # back to plain HTTP), which the proxy cannot log as a request and the client retried
    reg = doc["totals"]["registry"]
    assert reg["retries"] <= 1 and reg["requests"] == len(proxy.log) + reg["retries"]
    # lazily: of the big blob only what the read needed (and its read-ahead), not all of it
    big = max(data_blobs, key=lambda b: b["registry"]["bytes"])
    assert big["registry"]["bytes"] < len(BIG)
    table = subprocess.run([sys.executable, "-m", "nydusfs", "stats", str(m.path), "--pid-file",
                            str(m.pid_file)], capture_output=True, timeout=60)
    assert table.returncode == 0 and b"requests" in table.stdout and b"registry:" in table.stdout
