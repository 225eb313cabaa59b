"""The update cost `nydusfs diff` reports against what a lazy registry mount really fetches.

Two versions of a small image, built as tools/make-images builds realistic and realistic-v2
(version 2 is version 1's layer plus one): a package installed, one file changed, one
directory deleted, and one file of version 1 installed again under another name (its chunks
have digests version 1 already has, but they are stored in the new layer's blob). Both are
converted by `nydusfs convert` and pushed by skopeo to a real registry on 127.0.0.1.

A node holding version 1: a mount of it with a fresh --cache-dir and --prefetch-all, waited
for, unmounted. Then version 2 is mounted on that cache through the fault proxy (which logs
every request), and every file is read. The expected figures are computed here from the
chunk tables `nydusfs dump --json` prints, not with diff's code:

* needed(blob): the compressed bytes of the distinct chunk ranges version 2's files point at
  in that blob. The mount reads exactly these from each blob (stats: `bytes`), and diff's
  `fetch_bytes` is needed() of the blobs version 1 does not have, 0 for the others.
* From the registry the mount fetches nothing of a blob it holds, and of the other blobs
  whole 64 KiB pages with read-ahead: at least the pages under the needed ranges, at most the
  whole blob. Besides blobs it fetches the manifest, the config and the bootstrap layer.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import needs_fuse, needs_root
from corpus import Layer
from imagekit import nydusfs, skopeo_copy, tagged, umoci_image
from mount_helpers import Mount, Mounts
from registry_fault_proxy import FaultProxy
from registry_helpers import Registry

pytest_plugins = ["registry_fixtures"]
pytestmark = [needs_root, needs_fuse]

PAGE = 64 << 10           # the on-disk cache's page (docs/registry.md)
REPO = "update/app"


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _text(seed: int, size: int) -> bytes:
    r = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"package", b"usr", b"lib"]
    out = bytearray()
    while len(out) < size:
        out += r.choice(words) + b" %d\n" % r.randrange(1000)
    return bytes(out[:size])


SH = _random(1, 300_000)
APP, STATUS = _text(3, 30_000), _text(4, 20_000)


def _layers() -> tuple[Layer, Layer]:
    base = Layer()
    for d in ("etc", "usr", "usr/bin", "usr/share", "usr/share/doc", "usr/share/doc/app", "opt",
              "opt/app", "var", "var/lib", "var/lib/dpkg"):
        base.dir(d)
    base.file("etc/os-release", b"ID=test\n").file("usr/bin/sh", SH, mode=0o755)
    base.file("usr/share/doc/app/README", _text(2, 40_000)).file("opt/app/app.py", APP)
    base.file("var/lib/dpkg/status", STATUS)
    update = Layer()
    for d in ("usr", "usr/bin", "usr/lib", "usr/share", "usr/share/doc", "usr/share/doc/tree",
              "opt", "opt/app", "var", "var/lib", "var/lib/dpkg"):
        update.dir(d)
    update.file("usr/bin/tree", _random(5, 400_000), mode=0o755)            # the package
    update.file("usr/share/doc/tree/copyright", _text(6, 3_000))
    update.file("usr/lib/sh-static", SH, mode=0o755)                        # v1's bytes again
    update.file("opt/app/app.py", APP + b"print('version 2')\n")            # changed
    update.file("var/lib/dpkg/status", STATUS + b"Package: tree\nStatus: install ok installed\n")
    update.whiteout("usr/share/doc/app")                                    # deleted
    return base, update


class Versions:
    def __init__(self, layout: pathlib.Path, reg: Registry, env: dict[str, str]) -> None:
        self.layout, self.reg = layout, reg
        self.manifest = {tag: tagged(layout, tag)[1] for tag in ("v1", "v2")}
        self.dumps = {tag: self._dump(tag, env) for tag in ("v1", "v2")}

    def ref(self, tag: str, host: str | None = None) -> str:
        return f"docker://{host or self.reg.host}/{REPO}:{tag}"

    def blob_sizes(self, tag: str) -> dict[str, int]:
        """The data blobs (every layer but the last, the bootstrap layer), hex -> size."""
        return {d["digest"][7:]: d["size"] for d in self.manifest[tag]["layers"][:-1]}

    def bootstrap_layer(self, tag: str) -> dict[str, Any]:
        return self.manifest[tag]["layers"][-1]

    def _dump(self, tag: str, env: dict[str, str]) -> dict[str, Any]:
        r = nydusfs("dump", "--json", f"oci:{self.layout}:{tag}", env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, anon_registry: Registry) -> Versions:
    tmp = tmp_path_factory.mktemp("update-cost")
    base, update = _layers()
    src, nydus = tmp / "src", tmp / "nydus"
    umoci_image(src, "v1", [base], tmp / "work")
    umoci_image(src, "v2", [base, update], tmp / "work")
    env = {"NYDUSFS_CACHE_DIR": str(tmp / "convert-cache")}
    for tag in ("v1", "v2"):
        # 16 KiB chunks: ranges that start and end inside pages
        r = nydusfs("convert", "--no-progress", "--chunk-size", "0x4000", f"oci:{src}:{tag}",
                    f"oci:{nydus}:{tag}", env=env)
        assert r.returncode == 0, r.stderr
        skopeo_copy(f"oci:{nydus}:{tag}", f"docker://{anon_registry.host}/{REPO}:{tag}",
                    "--preserve-digests", *anon_registry.skopeo_args("dest"))
    return Versions(nydus, anon_registry, env)


@pytest.fixture
def proxies(anon_registry: Registry) -> Iterator[list[FaultProxy]]:
    made: list[FaultProxy] = []
    yield made
    for p in made:
        p.close()


# --- the reference: chunk tables, as dump prints them ------------------------------------------

def _ranges(dump: dict[str, Any]) -> dict[str, set[tuple[int, int]]]:
    """blob id -> the distinct compressed (offset, size) ranges the image's files point at."""
    out: dict[str, set[tuple[int, int]]] = {}
    for inode in dump["inodes"]:
        for c in inode.get("chunks") or ():
            out.setdefault(c["blob_id"], set()).add((c["compressed_offset"], c["compressed_size"]))
    return out


def _digests(dump: dict[str, Any], blobs: set[str] | None = None) -> set[str]:
    return {c["digest"] for inode in dump["inodes"] for c in inode.get("chunks") or ()
            if blobs is None or c["blob_id"] in blobs}


def _needed(ranges: set[tuple[int, int]]) -> int:
    return sum(size for _, size in ranges)


def _pages(ranges: set[tuple[int, int]], blob_size: int) -> int:
    """Bytes of the cache pages under the ranges (the blob's last page is short)."""
    pages = {p for off, size in ranges if size for p in range(off // PAGE, (off + size - 1) // PAGE + 1)}
    return sum(min(PAGE, blob_size - p * PAGE) for p in pages)


# --- what the mount fetched ----------------------------------------------------------------------

def _wire(proxy: FaultProxy, hexdigest: str, whole: int) -> int:
    """Bytes of a blob the registry sent through the proxy: Range answers, or the whole blob."""
    total = 0
    for e in proxy.requests("GET", f"/blobs/sha256:{hexdigest}"):
        if e["status"] == 206:
            a, b = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", e["range"]).groups())
            total += b - a + 1
        else:
            assert e["status"] == 200 and not e["range"], e
            total += whole
    return total


def _stats(m: Mount) -> dict[str, Any]:
    r = nydusfs("stats", str(m.path), "--pid-file", str(m.pid_file), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _settled(m: Mount, proxy: FaultProxy, sizes: dict[str, int]) -> dict[str, Any]:
    """Stats once the mount is done fetching: its registry counters equal the bytes the proxy
    passed for every blob, the same for half a second (a read-ahead may still run in the
    background right after the reads; the proxy logs a request when it starts)."""
    def state() -> tuple[dict[str, Any], list[Any], bool]:
        doc = _stats(m)
        counted = {b["blob_id"]: b["registry"].get("bytes", 0) for b in doc["blobs"]
                   if b["index"] is not None}
        return doc, [b.get("registry") for b in doc["blobs"]], \
            counted == {h: _wire(proxy, h, s) for h, s in sizes.items()}
    last, still = state(), 0
    for _ in range(600):
        time.sleep(0.1)
        now = state()
        still = still + 1 if now[1] == last[1] and now[2] else 0
        if still == 5:
            return now[0]
        last = now
    raise AssertionError(f"the mount kept fetching: {last[0]['blobs']} {proxy.log}")


def _read_all(root: pathlib.Path) -> int:
    n = 0
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    while f.read(1 << 20):
                        pass
                n += 1
    return n


def _diff(versions: Versions, tmp: pathlib.Path, a: str, b: str) -> dict[str, Any]:
    """diff of two references on the registry (its own bootstrap cache: the mounts must
    fetch their bootstrap layers themselves)."""
    r = nydusfs("diff", "--json", a, b, env={"NYDUSFS_CACHE_DIR": str(tmp / "diff-cache")})
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["update_cost"]


def _hold_v1(versions: Versions, mounts: Mounts, proxies: list[FaultProxy],
             cache: pathlib.Path) -> None:
    """A node holding version 1: every one of its blobs in the cache."""
    proxies.append(FaultProxy(versions.reg.url))
    m = mounts.mount(versions.ref("v1", proxies[-1].host), "--cache-dir", cache, "--prefetch-all")
    m.wait_log("prefetch-all done", timeout=120)
    assert "0 ranges failed" in m.log()
    sizes = versions.blob_sizes("v1")
    assert {h: _wire(proxies[-1], h, s) for h, s in sizes.items()} == sizes
    r = nydusfs("umount", str(m.path), "--pid-file", str(m.pid_file))
    assert r.returncode == 0, r.stderr


def _mount_and_read(versions: Versions, mounts: Mounts, proxies: list[FaultProxy],
                    cache: pathlib.Path, *args: str) -> tuple[FaultProxy, dict[str, Any]]:
    proxies.append(FaultProxy(versions.reg.url))
    m = mounts.mount(versions.ref("v2", proxies[-1].host), "--cache-dir", cache, *args)
    assert _read_all(m.path) == 7      # every regular file of version 2
    return proxies[-1], _settled(m, proxies[-1], versions.blob_sizes("v2"))


def _check_other_fetches(versions: Versions, proxy: FaultProxy) -> None:
    """Besides data blobs: the manifest, the config and the bootstrap layer, each once and whole."""
    boot = versions.bootstrap_layer("v2")
    assert _wire(proxy, boot["digest"][7:], boot["size"]) == boot["size"]
    config = versions.manifest["v2"]["config"]
    assert len(proxy.requests("GET", config["digest"])) == 1
    data = set(versions.blob_sizes("v2"))
    others = {e["path"].rsplit("/", 1)[-1] for e in proxy.requests("GET", "/blobs/")}
    assert others - {"sha256:" + h for h in data} == {boot["digest"], config["digest"]}


# --- the tests -----------------------------------------------------------------------------------

def test_update_cost_is_what_a_mount_holding_the_old_version_fetches(
        versions: Versions, mounts: Mounts, proxies: list[FaultProxy], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "nydusfs-cache"))
    cache = tmp_path / "blobs"
    v1, v2 = versions.dumps["v1"], versions.dumps["v2"]
    new = _ranges(v2)
    held = set(versions.blob_sizes("v1"))
    sizes = versions.blob_sizes("v2")
    assert set(new) == set(sizes) and held < set(sizes)
    fresh = {b for b in sizes if b not in held}
    # the case that tells a held blob from a held digest: the new blob stores chunks v1 has
    assert _digests(v2, fresh) & _digests(v1)

    cost = _diff(versions, tmp_path, versions.ref("v1"), versions.ref("v2"))
    by_blob = {c["blob"]: c for c in cost["blobs"]}
    expect = {b: (0 if b in held else _needed(r)) for b, r in new.items()}
    assert {b: c["fetch_bytes"] for b, c in by_blob.items()} == expect
    assert {b: c["bytes"] for b, c in by_blob.items()} == {b: _needed(r) for b, r in new.items()}
    boot = versions.bootstrap_layer("v2")
    assert cost["bootstrap"] == {"layer": boot["digest"], "bytes": boot["size"],
                                 "present_bytes": 0, "fetch_bytes": boot["size"]}
    assert cost["fetch_bytes"] == sum(expect.values()) + boot["size"]

    _hold_v1(versions, mounts, proxies, cache)
    proxy, doc = _mount_and_read(versions, mounts, proxies, cache)
    reads = {b["blob_id"]: b for b in doc["blobs"] if b["index"] is not None}
    assert set(reads) == set(sizes)
    for blob, size in sizes.items():
        wire = _wire(proxy, blob, size)
        # the mount read exactly the chunk ranges of the bootstrap from each blob
        assert reads[blob]["bytes"] == _needed(new[blob]), (blob, reads[blob])
        if blob in held:
            assert wire == 0 == by_blob[blob]["fetch_bytes"]
        else:
            # whole pages, and read-ahead up to the blob's end
            assert _pages(new[blob], size) <= wire <= size, (blob, wire)
            assert by_blob[blob]["fetch_bytes"] == reads[blob]["bytes"] > 0
    _check_other_fetches(versions, proxy)
    # in total: the chunk bytes the mount read from blobs it did not hold, and the bootstrap
    # layer it fetched
    fetched = sum(reads[b]["bytes"] for b in fresh) + _wire(proxy, boot["digest"][7:], boot["size"])
    assert cost["fetch_bytes"] == fetched


def test_update_cost_of_a_fresh_node_is_every_chunk_range(
        versions: Versions, mounts: Mounts, proxies: list[FaultProxy], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing cached: what the mount reads from each blob is diff's `bytes` of that blob
    (its cost with nothing held); the registry sends those ranges' pages at least."""
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "nydusfs-cache"))
    new = _ranges(versions.dumps["v2"])
    sizes = versions.blob_sizes("v2")
    cost = _diff(versions, tmp_path, versions.ref("v1"), versions.ref("v2"))
    proxy, doc = _mount_and_read(versions, mounts, proxies, tmp_path / "blobs")
    reads = {b["blob_id"]: b for b in doc["blobs"] if b["index"] is not None}
    assert {c["blob"]: c["bytes"] for c in cost["blobs"]} == {b: r["bytes"] for b, r in reads.items()}
    boot = versions.bootstrap_layer("v2")
    assert cost["bytes"] == sum(r["bytes"] for r in reads.values()) + \
        _wire(proxy, boot["digest"][7:], boot["size"])
    for blob, size in sizes.items():
        wire = _wire(proxy, blob, size)
        assert _pages(new[blob], size) <= wire <= size
    _check_other_fetches(versions, proxy)


def test_prefetch_all_fetches_the_blobs_not_held_whole(
        versions: Versions, mounts: Mounts, proxies: list[FaultProxy], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--prefetch-all on a node holding version 1: the blobs diff charges, each whole; the
    ones it does not charge, not at all."""
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "nydusfs-cache"))
    cache = tmp_path / "blobs"
    cost = _diff(versions, tmp_path, versions.ref("v1"), versions.ref("v2"))
    _hold_v1(versions, mounts, proxies, cache)
    proxies.append(FaultProxy(versions.reg.url))
    m = mounts.mount(versions.ref("v2", proxies[-1].host), "--cache-dir", cache, "--prefetch-all")
    m.wait_log("prefetch-all done", timeout=120)
    sizes = versions.blob_sizes("v2")
    charged = {c["blob"] for c in cost["blobs"] if c["fetch_bytes"]}
    assert {b: _wire(proxies[-1], b, s) for b, s in sizes.items()} == \
        {b: (s if b in charged else 0) for b, s in sizes.items()}
