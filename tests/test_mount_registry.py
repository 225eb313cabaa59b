"""`nydusfs mount docker://...` on real registries (Debian's docker-registry), through the on-disk
chunk cache, with real FUSE mounts: equality with the source image (`check --mounted`), parallel
readers, the three auth configurations, laziness counted from the registry side (the fault
proxy's request log) and by `nydusfs stats`, faults, crash safety, prefetch-all and bad references.

The image: one layer of three 32 MiB incompressible files plus a few small files, one layer of
many small files; converted to RAFS v5 and v6 by nydusfs into OCI layouts and pushed by skopeo.
"""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import hashlib
import json
import os
import pathlib
import random
import signal
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import needs_fuse, needs_root
from corpus import Layer
from imagekit import nydusfs, skopeo_copy, tagged, umoci_image
from mount_helpers import Mounts, is_ours_mounted
from registry_fault_proxy import FaultProxy
from registry_helpers import USER, PASSWORD, Registry, free_port, start_registry

pytest_plugins = ["registry_fixtures"]
pytestmark = [needs_root, needs_fuse]

BIG = 32 << 20
RETRY = "2"          # --retry-time of the fault tests: a failed read answers within seconds


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _files() -> tuple[list[Layer], dict[str, bytes]]:
    files: dict[str, bytes] = {}
    big = Layer().dir("big").dir("usr").dir("usr/share").dir("usr/share/doc")
    for i in range(3):
        files[f"big/blob{i}.bin"] = _random(i, BIG)
        big.file(f"big/blob{i}.bin", files[f"big/blob{i}.bin"])
    for i in range(20):
        name = f"usr/share/doc/readme{i:02d}.txt"
        files[name] = (f"document {i}\n" * (50 + 37 * i)).encode()
        big.file(name, files[name])
    small = Layer().dir("etc").dir("etc/conf.d")
    for i in range(300):
        name = f"etc/conf.d/item{i:03d}.conf"
        files[name] = (f"key{i} = {i * 7919 % 1000}\n" * (3 + i % 40)).encode() + _random(1000 + i, 64)
        small.file(name, files[name])
    small.symlink("etc/first.conf", "conf.d/item000.conf")
    return [big, small], files


class Image:
    def __init__(self, src: str, layout: pathlib.Path, tag: str, files: dict[str, bytes]) -> None:
        self.src, self.layout, self.tag, self.files = src, layout, tag, files
        self.layer_tars: list[pathlib.Path] = []    # the OCI layers, for check --mounted
        _, manifest = tagged(layout, tag)
        layers = manifest["layers"]
        self.bootstrap = layers[-1]["digest"]
        self.config = manifest["config"]["digest"]
        self.data_blobs = {d["digest"]: d["size"] for d in layers[:-1]}

    def push(self, reg: Registry, repo: str) -> str:
        skopeo_copy(f"oci:{self.layout}:{self.tag}", f"docker://{reg.host}/{repo}:{self.tag}",
                    "--preserve-digests", *reg.skopeo_args("dest"))
        return f"{repo}:{self.tag}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    tmp = tmp_path_factory.mktemp("images")
    layers, files = _files()
    src = umoci_image(tmp / "src", "v1", layers, tmp / "work")
    out = {}
    for version in ("5", "6"):
        r = nydusfs("convert", src, f"oci:{tmp / 'nydus'}:v{version}", "--fs-version", version,
                    "--no-progress", env={"NYDUSFS_CACHE_DIR": str(tmp / "cache")})
        assert r.returncode == 0, r.stderr
        out[f"v{version}"] = Image(src, tmp / "nydus", f"v{version}", files)
        out[f"v{version}"].layer_tars = [tmp / "work" / f"v1-layer{i}.tar" for i in range(2)]
    return out


@pytest.fixture(scope="module")
def anon_pushed(anon_registry: Registry, images: dict[str, Image]) -> dict[str, str]:
    return {v: img.push(anon_registry, "lazy/app") for v, img in images.items()}


@pytest.fixture
def proxy(anon_registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(anon_registry.url)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def caches(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Bootstraps (and the default blob cache) of this test's mounts under its own dir."""
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "nydusfs-cache"))
    return tmp_path / "blobs"


def _data_bytes(proxy: FaultProxy, img: Image) -> int:
    """Bytes of the image's data blobs the mount asked the registry for (Range GETs)."""
    total = 0
    for e in proxy.requests("GET", "/blobs/"):
        if e["path"].rsplit("/", 1)[-1] not in img.data_blobs:
            continue
        assert e["range"], e        # data blobs are only ever read by range
        a, b = e["range"].removeprefix("bytes=").split("-")
        total += int(b) - int(a) + 1
    return total


def _quiet(proxy: FaultProxy, img: Image, still: float = 2.0, limit: float = 120.0) -> None:
    """Wait until a mount's background read-ahead is over: no new data request through
    `proxy` for `still` seconds (a range that is still being fetched is neither in the cache
    for another mount nor counted against it, so a comparison would depend on timing)."""
    deadline = time.monotonic() + limit
    seen, since = _data_bytes(proxy, img), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, "the mount kept fetching"
        time.sleep(0.2)
        now = _data_bytes(proxy, img)
        if now != seen:
            seen, since = now, time.monotonic()


def _read(path: pathlib.Path, drop: bool = False) -> bytes:
    """A file's bytes; with `drop`, its kernel page cache dropped first (the read reaches the
    server)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _check_mounted(img: Image, mountpoint: pathlib.Path) -> None:
    r = nydusfs("check", "--mounted", str(mountpoint), "--layers", *map(str, img.layer_tars),
                "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr


def _small(img: Image) -> list[str]:
    names = sorted(n for n in img.files if not n.startswith("big/"))
    return names[::29][:5] + [n for n in names if "doc" in n][:5]


# --- equality, parallel readers, laziness ----------------------------------------------------

@pytest.mark.parametrize("version", ["v5", "v6"])
def test_mount_equals_the_source_and_is_lazy(version, images, anon_pushed, proxy, mounts, caches):
    img = images[version]
    m = mounts.mount(f"docker://{proxy.host}/{anon_pushed[version]}", "--cache-dir", caches)
    # ready: manifest, config and the bootstrap layer, and no byte of a data blob
    blob_gets = [(e["path"].rsplit("/", 1)[-1], e["range"]) for e in proxy.requests("GET", "/blobs/")]
    assert blob_gets and {d for d, _ in blob_gets} <= {img.bootstrap, img.config}, (blob_gets, img.data_blobs)
    listed = sorted(str(p.relative_to(m.path)) for p in m.path.rglob("*"))    # ls -R
    assert "etc/conf.d/item299.conf" in listed and "big/blob2.bin" in listed
    for p in m.path.rglob("*"):
        p.lstat()
    assert _data_bytes(proxy, img) == 0
    for name in _small(img):
        assert (m.path / name).read_bytes() == img.files[name]
    fetched, total = _data_bytes(proxy, img), sum(img.data_blobs.values())
    assert 0 < fetched < total * 0.02, (fetched, total)
    # the same from the mount's side: `nydusfs stats`
    r = nydusfs("stats", str(m.path), "--pid-file", str(m.pid_file), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["first_reads"]] == ["/" + n for n in _small(img)]
    counted = sum(b["registry"]["bytes"] for b in doc["blobs"] if b["index"] is not None)
    assert 0 < counted < total * 0.02, (counted, total)

    # 8 parallel readers over the whole tree, then the checker against the source layers
    names = sorted(img.files)
    random.Random(8).shuffle(names)

    def read(name: str) -> bool:
        return hashlib.sha256((m.path / name).read_bytes()).digest() == \
            hashlib.sha256(img.files[name]).digest()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read, names))
    _check_mounted(img, m.path)


def test_concurrent_mounts_share_the_cache(images, anon_registry, anon_pushed, proxy, mounts,
                                           caches):
    img = images["v6"]
    # the first mount fills the cache with every blob (a partial fill would leave the second
    # mount's read-ahead, whose window depends on timing, something to fetch)
    a = mounts.mount(f"docker://{proxy.host}/{anon_pushed['v6']}", "--cache-dir", caches,
                     "--prefetch-all")
    assert (a.path / "big/blob1.bin").read_bytes() == img.files["big/blob1.bin"]
    deadline = time.monotonic() + 120
    while _data_bytes(proxy, img) < sum(img.data_blobs.values()):
        assert time.monotonic() < deadline, "--prefetch-all did not fetch every blob"
        time.sleep(0.2)
    _quiet(proxy, img)      # the last ranges stored and marked
    # the second mount reaches the registry through its own proxy, so that only its requests
    # are counted
    second = FaultProxy(anon_registry.url)
    try:
        b = mounts.mount(f"docker://{second.host}/{anon_pushed['v6']}", "--cache-dir", caches,
                         "--cache-size", "0")
        assert (b.path / "big/blob1.bin").read_bytes() == img.files["big/blob1.bin"]
        assert _data_bytes(second, img) == 0     # every byte from the cache the first filled
        # the bootstrap layer was fetched and extracted once, for the first mount
        assert len(proxy.requests("GET", img.bootstrap)) == 1
        assert second.requests("GET", img.bootstrap) == []
        assert second.requests("GET", "/manifests/")     # it did go to the registry
    finally:
        second.close()


def _authfile(tmp: pathlib.Path, reg: Registry, password: str = PASSWORD) -> pathlib.Path:
    path = tmp / f"auth-{hashlib.sha256(password.encode()).hexdigest()[:8]}.json"
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    return path


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_mount_with_credentials(kind, request, images, mounts, caches, tmp_path, monkeypatch):
    reg: Registry = request.getfixturevalue(f"{kind}_registry")
    img = images["v6"]
    ref = f"docker://{reg.host}/{img.push(reg, 'private/app')}"
    tls = ["--cert-dir", str(reg.cert_dir)] if kind == "basic" else []     # the test CA
    (tmp_path / "none.json").write_text('{"auths": {}}')
    mp = tmp_path / "mnt"
    mp.mkdir()
    for authfile in (tmp_path / "none.json", _authfile(tmp_path, reg, "wrong-" + PASSWORD)):
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))   # no / wrong credentials
        r = nydusfs("mount", ref, str(mp), "--cache-dir", str(caches), *tls)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and not is_ours_mounted(mp)
    r = nydusfs("mount", ref, str(mp), "--cache-dir", str(caches), *tls,
                "--creds", f"{USER}:wrong-{PASSWORD}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not is_ours_mounted(mp)
    # the credentials from the auth file, then from --creds (the auth file holding none)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_authfile(tmp_path, reg)))
    m = mounts.mount(ref, "--cache-dir", caches, *tls)
    _check_mounted(img, m.path)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    m = mounts.mount(ref, "--cache-dir", caches, *tls, "--creds", f"{USER}:{PASSWORD}")
    assert (m.path / "etc/first.conf").read_bytes() == img.files["etc/conf.d/item000.conf"]


# --- faults ----------------------------------------------------------------------------------

@pytest.fixture
def own_registry(registry_tools, tmp_path: pathlib.Path) -> Iterator[Registry]:
    reg = start_registry("anon", tmp_path / "registry")
    yield reg
    reg.stop()


def test_registry_stopped_and_restarted(images, own_registry, mounts, caches):
    img = images["v6"]
    reg = own_registry
    ref = f"docker://{reg.host}/{img.push(reg, 'down/app')}"
    m = mounts.mount(ref, "--cache-dir", caches, "--cache-size", "0", "--retry-time", RETRY)
    mounts.expect_log(r"ERROR .*blob sha256:[0-9a-f]{64}.*gave up after")
    mounts.expect_log(r"WARNING .*reads work again")
    cached = ["etc/conf.d/item007.conf", "usr/share/doc/readme03.txt"]
    for name in cached:
        assert _read(m.path / name) == img.files[name]
    reg.stop_registry()
    for _ in range(2):          # a read loop: cached files read, the uncached one fails alone
        for name in cached:
            assert _read(m.path / name, drop=True) == img.files[name]
        with pytest.raises(OSError) as e:
            _read(m.path / "big/blob2.bin", drop=True)
        assert e.value.errno == errno.EIO
        assert sorted(os.listdir(m.path / "etc"))[:1] == ["conf.d"]
    assert is_ours_mounted(m.path)
    reg.start()                 # same port, same storage
    assert _read(m.path / "big/blob2.bin", drop=True) == img.files["big/blob2.bin"]
    _check_mounted(img, m.path)


def test_bursts_and_drops_are_retried(images, anon_pushed, proxy, mounts, caches):
    img = images["v5"]
    m = mounts.mount(f"docker://{proxy.host}/{anon_pushed['v5']}", "--cache-dir", caches,
                     "--cache-size", "0")
    proxy.fail(3, 500)
    assert _read(m.path / "big/blob0.bin") == img.files["big/blob0.bin"]
    proxy.fail(2, 429, retry_after="1")
    proxy.fail(2, 503)
    assert _read(m.path / "etc/conf.d/item100.conf") == img.files["etc/conf.d/item100.conf"]
    proxy.drop(4, after=5000)
    assert _read(m.path / "big/blob1.bin") == img.files["big/blob1.bin"]
    statuses = [e.get("status") for e in proxy.requests("GET", "/blobs/")]
    assert statuses.count(500) == 3 and statuses.count(429) == 2 and statuses.count(503) == 2
    assert sum(1 for e in proxy.requests("GET", "/blobs/") if e.get("dropped")) == 4
    _check_mounted(img, m.path)


def test_token_expiry_during_a_read_loop(registry_tools, images, mounts, caches, tmp_path,
                                         monkeypatch):
    """The issue's two-minute read loop with 4 s tokens: about 30 lifetimes, no failed read."""
    reg = start_registry("token", tmp_path / "registry", token_ttl=4)
    try:
        img = images["v6"]
        ref = f"docker://{reg.host}/{img.push(reg, 'tok/app')}"
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_authfile(tmp_path, reg)))
        m = mounts.mount(ref, "--cache-dir", caches, "--cache-size", "0")
        # 1 MiB apart, backwards through three files: every read is a fetch (no read-ahead
        # follows a backward reader), so every read needs a valid token
        spots = [(name, off) for name in ("big/blob2.bin", "big/blob1.bin", "big/blob0.bin")
                 for off in range(BIG - 4096, -1, -(1 << 20))]
        start = time.monotonic()
        reads = 0
        for i, (name, off) in enumerate(spots):
            with open(m.path / name, "rb", buffering=0) as f:
                assert os.pread(f.fileno(), 4096, off) == img.files[name][off:off + 4096], (name, off)
            reads += 1
            # paced to spread the reads over two minutes
            time.sleep(max(0.0, start + 120 * (i + 1) / len(spots) - time.monotonic()))
        assert reads == len(spots) == 96 and time.monotonic() - start >= 120
        issued = reg.token_requests()
        assert len(issued) >= 20, issued         # the loop outlived tokens and renewed them
    finally:
        reg.stop()


# --- crash safety, prefetch-all ----------------------------------------------------------------

def _cache_files(cache: pathlib.Path, digest: str) -> tuple[pathlib.Path, pathlib.Path]:
    hexd = digest.split(":")[1]
    return cache / f"{hexd}.data", cache / f"{hexd}.map"


def _ready_pages(map_file: pathlib.Path) -> list[int]:
    raw = map_file.read_bytes()[128:]
    return [i for i in range(len(raw) // 8) if struct.unpack_from("<II", raw, i * 8)[1] == 0x31594452]


def test_sigkill_during_reads_then_corrupt_cache(images, anon_pushed, proxy, mounts, caches):
    img = images["v6"]
    ref = f"docker://{proxy.host}/{anon_pushed['v6']}"
    m = mounts.mount(ref, "--cache-dir", caches, "--prefetch-all", "--prefetch-threads", "4")
    small = min(img.data_blobs, key=img.data_blobs.__getitem__)     # the small files' layer
    assert (m.path / "etc/conf.d/item100.conf").read_bytes() == img.files["etc/conf.d/item100.conf"]

    def reader(name: str) -> None:
        try:
            (m.path / name).read_bytes()
        except OSError:
            pass                # the mount dies under it
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(reader, n) for n in ("big/blob0.bin", "big/blob1.bin",
                                                    "big/blob2.bin", "etc/conf.d/item200.conf")]
        deadline = time.monotonic() + 60
        big = max(img.data_blobs, key=img.data_blobs.__getitem__)
        while time.monotonic() < deadline:
            if _cache_files(caches, big)[1].exists() and len(_ready_pages(_cache_files(caches, big)[1])) > 16:
                break
            time.sleep(0.05)
        pid = m.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for f in futures:
            f.result()
    r = subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert not is_ours_mounted(m.path)

    # damage the cache on purpose: a ready page's bytes changed, another blob's file truncated
    data, map_file = _cache_files(caches, big)
    pages = _ready_pages(map_file)
    assert pages
    victim = pages[len(pages) // 2]
    with open(data, "r+b") as f:
        f.seek(victim * 65536 + 100)
        f.write(b"\xde\xad\xbe\xef" * 16)
    small_data, small_map = _cache_files(caches, small)
    assert _ready_pages(small_map)
    os.truncate(small_data, 1000)
    before = len(proxy.requests("GET", "/blobs/"))

    mounts.expect_log(r"WARNING .*blob sha256:[0-9a-f]{64}: page \d+ does not match its checksum")
    m2 = mounts.mount(ref, "--cache-dir", caches, "--cache-size", "0")
    _check_mounted(img, m2.path)
    again = []
    for e in proxy.requests("GET", "/blobs/")[before:]:
        if e["range"] and e["path"].endswith(big.split(":")[1]):
            a, b = map(int, e["range"].removeprefix("bytes=").split("-"))
            again.append((a, b))
    assert any(a <= victim * 65536 + 100 <= b for a, b in again), (victim, again)
    # the truncated file's ready page 0 was fetched again, not served short
    assert any(e["range"] and e["range"].startswith("bytes=0-") and e["path"].endswith(small.split(":")[1])
               for e in proxy.requests("GET", "/blobs/")[before:])


def test_prefetch_all_then_registry_down(images, own_registry, mounts, caches):
    img = images["v5"]
    reg = own_registry
    ref = f"docker://{reg.host}/{img.push(reg, 'pre/app')}"
    m = mounts.mount(ref, "--cache-dir", caches, "--cache-size", "0", "--prefetch-all",
                     "--prefetch-threads", "3", "--bandwidth-limit", "200M")
    m.wait_log("prefetch-all done", timeout=300)
    assert "0 ranges failed" in m.log()
    reg.stop_registry()         # everything is in the cache now
    _check_mounted(img, m.path)


# --- refusals --------------------------------------------------------------------------------

def test_bad_references_fail_in_one_line(images, anon_registry, anon_pushed, tmp_path, caches):
    mp = tmp_path / "mnt"
    mp.mkdir()
    down = f"127.0.0.1:{free_port()}"
    cases = [
        (f"docker://{anon_registry.host}/no/such-repo:v1", "no/such-repo"),
        (f"docker://{anon_registry.host}/lazy/app:no-such-tag", "no-such-tag"),
        (f"docker://{down}/lazy/app:v6", down),
        ("docker://", "docker://"),
        (f"docker://{anon_registry.host}/UPPER/case:v1", "UPPER"),
        (f"docker://{anon_registry.host}/{anon_pushed['v6']}".replace(":v6", "@sha256:" + "0" * 64),
         "0" * 64),
    ]
    for ref, named in cases:
        r = nydusfs("mount", ref, str(mp), "--cache-dir", str(caches))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and named in lines[0], (ref, r.stderr)
        assert "Traceback" not in r.stderr
        assert not is_ours_mounted(mp)
    layout = f"oci:{images['v6'].layout}:v6"
    for flag in (["--cache-dir", str(caches)], ["--prefetch-all"], ["--bandwidth-limit", "1M"]):
        r = nydusfs("mount", layout, str(mp), *flag)
        assert r.returncode == 2 and "registry images" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not is_ours_mounted(mp)


def test_local_mount_unchanged(images, mounts: Mounts):
    img = images["v6"]
    m = mounts.mount(f"oci:{img.layout}:v6")
    assert (m.path / "etc/first.conf").read_bytes() == img.files["etc/conf.d/item000.conf"]


def test_cache_limit_evicts_blobs_no_mount_uses(images, anon_pushed, proxy, mounts, caches):
    v6, v5 = images["v6"], images["v5"]
    assert not set(v6.data_blobs) & set(v5.data_blobs)
    m = mounts.mount(f"docker://{proxy.host}/{anon_pushed['v6']}", "--cache-dir", caches)
    assert (m.path / "big/blob0.bin").read_bytes() == v6.files["big/blob0.bin"]
    r = nydusfs("umount", str(m.path))
    assert r.returncode == 0, r.stderr
    big6 = max(v6.data_blobs, key=v6.data_blobs.__getitem__)
    assert _cache_files(caches, big6)[0].exists()
    m = mounts.mount(f"docker://{proxy.host}/{anon_pushed['v5']}", "--cache-dir", caches,
                     "--cache-limit", "8M")
    assert (m.path / "big/blob1.bin").read_bytes() == v5.files["big/blob1.bin"]
    assert not _cache_files(caches, big6)[0].exists()      # evicted: no mount had it open
    big5 = max(v5.data_blobs, key=v5.data_blobs.__getitem__)
    assert _cache_files(caches, big5)[0].exists()          # in use: kept over the limit


def test_unusable_cache_dir(images, anon_pushed, anon_registry, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    (tmp_path / "file").write_text("x")
    r = nydusfs("mount", f"docker://{anon_registry.host}/{anon_pushed['v6']}", str(mp),
                "--cache-dir", str(tmp_path / "file" / "cache"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--cache-dir" in r.stderr and not is_ours_mounted(mp)


def test_umount_while_prefetch_retries(images, own_registry, mounts, caches):
    img = images["v6"]
    reg = own_registry
    ref = f"docker://{reg.host}/{img.push(reg, 'stop/app')}"
    m = mounts.mount(ref, "--cache-dir", caches, "--prefetch-all", "--bandwidth-limit", "1M")
    assert (m.path / "etc/first.conf").read_bytes() == img.files["etc/conf.d/item000.conf"]
    reg.stop_registry()         # prefetch requests now retry against nothing
    r = nydusfs("umount", str(m.path))
    assert r.returncode == 0, r.stderr
    assert not is_ours_mounted(m.path)
