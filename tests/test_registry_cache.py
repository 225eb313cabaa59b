"""The on-disk chunk cache (nydusfs/registry/cache.py) in front of a real registry, requests
counted by the proxy: reuse across instances and processes, request merging, damaged files
refetched and never served, SIGKILLed writers, LRU eviction of whole blobs."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Iterator

import pytest
from registry_fault_proxy import FaultProxy
from registry_helpers import PushedImage, Registry, push_test_image

from nydusfs.registry import open_source
from nydusfs.registry.cache import (
    ENTRY,
    HEADER,
    PIECE_PAGES,
    READAHEAD_REQUEST,
    READY,
    BlobCache,
    CachedRangeReader,
    NotCached,
    cache_only,
)
from nydusfs.registry.source import RegistrySource

# the registry fixtures (anon_registry, basic_registry, token_registry, any_registry)
pytest_plugins = ["registry_fixtures"]

PAGE = 64 << 10


@pytest.fixture(scope="module")
def images(anon_registry: Registry,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[PushedImage, PushedImage]:
    tmp = tmp_path_factory.mktemp("img")
    return (push_test_image(anon_registry, tmp, repo="cache/a", seed=11),
            push_test_image(anon_registry, tmp, repo="cache/b", seed=12))


@pytest.fixture(scope="module")
def module_proxy(anon_registry: Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(anon_registry.url)
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(module_proxy: FaultProxy) -> Iterator[FaultProxy]:
    module_proxy.clear()
    yield module_proxy
    module_proxy.clear()


def _open(proxy: FaultProxy, img: PushedImage, cache: pathlib.Path, **kw: object) -> RegistrySource:
    return open_source(f"docker://{proxy.host}/{img.repo}:{img.tag}", plain_http=True,
                       cache_dir=cache, **kw)


def _gets(proxy: FaultProxy, digest: str) -> list[str]:
    return [e["range"] for e in proxy.requests("GET", digest[7:])]


def _ready_pages(cache: pathlib.Path, digest: str) -> list[int]:
    raw = (cache / f"{digest[7:]}.map").read_bytes()[HEADER.size:]
    return [i for i in range(len(raw) // ENTRY.size)
            if ENTRY.unpack_from(raw, i * ENTRY.size)[1] == READY]


def test_reads_cached_and_reused(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                                 tmp_path: pathlib.Path) -> None:
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    rnd = random.Random(5)
    reads = [(rnd.randrange(len(layer)), rnd.randrange(1, 200000)) for _ in range(40)]
    start = len(_gets(proxy, digest))
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        for off, n in reads:
            assert r.pread(n, off) == layer[off:off + n]
        r.close()
    fetched = len(_gets(proxy, digest)) - start
    assert 0 < fetched <= len(layer) // (1 << 20) + 2    # 1 MiB requests, each page once
    with _open(proxy, img, tmp_path) as src:             # a later mount: all from disk
        r = src.range_reader(digest)
        for off, n in reads:
            assert r.pread(n, off) == layer[off:off + n]
        r.close()
    assert len(_gets(proxy, digest)) - start == fetched


def test_request_merging(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                         tmp_path: pathlib.Path) -> None:
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    start = len(_gets(proxy, digest))
    with _open(proxy, img, tmp_path / "a") as src:
        r = src.range_reader(digest)
        assert r.pread(100, 10) == layer[10:110]
        assert _gets(proxy, digest)[start:] == [f"bytes=0-{(1 << 20) - 1}"]  # read-ahead 1 MiB
        assert r.pread(4000, 900000) == layer[900000:904000]
        assert len(_gets(proxy, digest)) == start + 1
    # without read-ahead: two missing pages around a cached one are one request
    cache = BlobCache(tmp_path / "b")
    with open_source(f"docker://{proxy.host}/{img.repo}:{img.tag}", plain_http=True) as src:
        fetch = src.range_reader(digest).pread       # straight to the registry
        r2 = CachedRangeReader(cache, digest, len(layer), fetch, readahead=False)
        assert r2.pread(10, PAGE + 5) == layer[PAGE + 5:PAGE + 15]
        before = len(_gets(proxy, digest))
        assert r2.pread(3 * PAGE, 0) == layer[:3 * PAGE]
        assert _gets(proxy, digest)[before:] == [f"bytes=0-{3 * PAGE - 1}"]
        # runs longer than 1 MiB are split
        before = len(_gets(proxy, digest))
        assert r2.pread(2 << 20, 3 * PAGE) == layer[3 * PAGE:3 * PAGE + (2 << 20)]
        assert len(_gets(proxy, digest)) - before == 2
        r2.close()


def test_threads_share_inflight_pages(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                                      tmp_path: pathlib.Path) -> None:
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    proxy.latency = 0.2
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        before = len(_gets(proxy, digest))
        errors: list[BaseException] = []

        def read(k: int) -> None:
            try:
                # not one after another: no background read-ahead, only on-demand fetches
                assert r.pread(1000, 3000 * k) == layer[3000 * k:3000 * k + 1000]
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(_gets(proxy, digest)) - before == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "map-header", "map-size"])
def test_damaged_cache_refetched(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                                 tmp_path: pathlib.Path, damage: str) -> None:
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        assert r.pread(len(layer), 0) == layer
        r.close()
    data, mapf = tmp_path / f"{digest[7:]}.data", tmp_path / f"{digest[7:]}.map"
    if damage == "flip":
        with open(data, "r+b") as f:
            f.seek(5 * PAGE + 77)
            b = f.read(1)
            f.seek(5 * PAGE + 77)
            f.write(bytes([b[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(data, len(layer) // 2)
    elif damage == "map-header":
        with open(mapf, "r+b") as f:
            f.write(b"garbage")
    else:
        os.truncate(mapf, HEADER.size + 3)
    before = len(_gets(proxy, digest))
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        assert r.pread(len(layer), 0) == layer
        r.close()
    again = _gets(proxy, digest)[before:]
    assert again, "damage must cause a fetch"
    if damage == "flip":
        assert again == [f"bytes={5 * PAGE}-{6 * PAGE - 1}"]    # that page only


WRITER = textwrap.dedent("""
    import random, sys
    from nydusfs.registry import open_source
    ref, cache, digest, seed = sys.argv[1:5]
    src = open_source(ref, plain_http=True, cache_dir=cache)
    r = src.range_reader(digest)
    rnd = random.Random(int(seed))
    print("ready", flush=True)
    while True:
        off = rnd.randrange(r.size)
        r.pread(rnd.randrange(1, 300000), off)
""")


def test_sigkill_writers_leave_nothing_corrupt(proxy: FaultProxy,
                                               images: tuple[PushedImage, PushedImage],
                                               tmp_path: pathlib.Path) -> None:
    """Writers killed mid-fetch, three times over the same cache: every page marked ready
    holds the blob's true bytes, and a reader afterwards gets every byte right."""
    img = images[1]
    layer, digest = img.layers[0], img.layer_digests[0]
    proxy.latency = 0.01
    proxy.drop(4, after=200000)          # and connections cut mid-body
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    cache = tmp_path / "cache"
    ref = f"docker://{proxy.host}/{img.repo}:{img.tag}"
    for seed in range(3):
        procs = [subprocess.Popen([sys.executable, str(script), ref, str(cache), digest,
                                   str(seed * 10 + k)], stdout=subprocess.PIPE, text=True)
                 for k in range(2)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        time.sleep(0.4 + 0.3 * seed)
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        if seed == 0:
            proxy.clear()
            proxy.latency = 0.01
    ready = _ready_pages(cache, digest)
    assert ready, "the writers fetched something before they were killed"
    raw = (cache / f"{digest[7:]}.data").read_bytes()
    for i in ready:
        assert raw[i * PAGE:(i + 1) * PAGE] == layer[i * PAGE:(i + 1) * PAGE], f"page {i}"
    with _open(proxy, img, cache) as src:
        r = src.range_reader(digest)
        assert r.pread(len(layer), 0) == layer


def test_concurrent_processes_share_a_blob(proxy: FaultProxy,
                                           images: tuple[PushedImage, PushedImage],
                                           tmp_path: pathlib.Path) -> None:
    img = images[1]
    digest = img.layer_digests[0]
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent("""
        import hashlib, random, sys
        from nydusfs.registry import open_source
        ref, cache, digest, seed = sys.argv[1:5]
        r = open_source(ref, plain_http=True, cache_dir=cache).range_reader(digest)
        step = 100000
        offs = list(range(0, r.size, step))
        random.Random(int(seed)).shuffle(offs)
        parts = {o: r.pread(step, o) for o in offs}
        data = b"".join(parts[o] for o in sorted(parts))
        print("sha256:" + hashlib.sha256(data).hexdigest())
    """))
    ref = f"docker://{proxy.host}/{img.repo}:{img.tag}"
    procs = [subprocess.Popen([sys.executable, str(script), ref, str(tmp_path / "c"), digest,
                               str(k)], stdout=subprocess.PIPE, text=True) for k in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == [digest] * 3


def test_lru_eviction(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                      tmp_path: pathlib.Path) -> None:
    a, b = images
    da, db = a.layer_digests[0], b.layer_digests[0]
    limit = 4 << 20
    with _open(proxy, a, tmp_path, cache_limit=limit) as src:
        r = src.range_reader(da)
        r.pread(r.size, 0)
        held = r                             # blob A in use while B is read
        with _open(proxy, b, tmp_path, cache_limit=limit) as src_b:
            rb = src_b.range_reader(db)
            rb.pread(rb.size, 0)
            rb.close()
        assert (tmp_path / f"{da[7:]}.data").exists()        # in use: kept over the limit
        held.close()
    time.sleep(0.01)
    os.utime(tmp_path / f"{db[7:]}.map")                     # B used last
    with _open(proxy, b, tmp_path, cache_limit=limit) as src_b:
        rb = src_b.range_reader(db)
        assert rb.pread(rb.size, 0) == b.layers[0]
        assert src_b.cache is not None
        assert src_b.cache.evict() == [da]                  # least recently used goes
        rb.close()
    assert not (tmp_path / f"{da[7:]}.data").exists()
    assert (tmp_path / f"{db[7:]}.data").exists()
    assert BlobCache(tmp_path).usage() <= limit


def test_map_format(tmp_path: pathlib.Path) -> None:
    """The readiness map as documented: 128-byte header, then 8 bytes per page."""
    cache = BlobCache(tmp_path, page_size=PAGE)
    data = bytes(range(256)) * 1000
    digest = "sha256:" + "ab" * 32
    f = cache.open(digest, len(data))
    f.write(1, memoryview(data[PAGE:3 * PAGE]))
    f.commit(1, data[PAGE:3 * PAGE])
    f.close()
    raw = (tmp_path / ("ab" * 32 + ".map")).read_bytes()
    magic, version, page, size, dig = HEADER.unpack_from(raw)
    assert (magic, version, page, size) == (b"nydusfs-cache\0\0\0", 1, PAGE, len(data))
    assert dig.rstrip(b"\0") == digest.encode()
    assert len(raw) == HEADER.size + 4 * ENTRY.size
    entries = [struct.unpack_from("<II", raw, HEADER.size + 8 * i) for i in range(4)]
    assert [e[1] == READY for e in entries] == [False, True, True, False]


def test_registry_down_cached_ranges_still_read(registry_tools: None, tmp_path: pathlib.Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Registry stopped: cached ranges read, uncached ones fail (logged once per blob);
    registry back: the same reader works again."""
    from registry_helpers import start_registry

    from nydusfs.registry import RegistryError
    reg = start_registry("anon", tmp_path / "reg")
    try:
        img = push_test_image(reg, tmp_path)
        layer, digest = img.layers[0], img.layer_digests[0]
        with open_source(f"docker://{reg.host}/{img.repo}:{img.tag}", cache_dir=tmp_path / "c",
                         retry_time=0.5) as src:
            r = src.range_reader(digest)
            assert r.pread(1000, 0) == layer[:1000]          # pages 0-15 cached (read-ahead)
            reg.stop_registry()
            for _ in range(3):
                assert r.pread(5000, 500000) == layer[500000:505000]
                with pytest.raises(RegistryError, match="gave up"):
                    r.pread(100, 2 << 20)
            errors = [rec for rec in caplog.records if rec.name == "nydusfs.registry"
                      and rec.levelname == "ERROR"]
            assert len(errors) == 1 and digest in errors[0].getMessage()
            reg.start()
            assert r.pread(100, 2 << 20) == layer[2 << 20:(2 << 20) + 100]
            stats = src.stats()
            blob = stats["blobs"][digest]   # type: ignore[index]
            assert blob["errors"] == 3 and blob["cache_hits"] >= 3 and blob["cache_misses"] == 2
    finally:
        reg.stop()


def test_sequential_reader_gets_next_window_in_background(
        proxy: FaultProxy, images: tuple[PushedImage, PushedImage], tmp_path: pathlib.Path) -> None:
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    start = len(_gets(proxy, digest))
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        assert isinstance(r, CachedRangeReader)
        step = 128 << 10
        assert r.pread(step, 0) == layer[:step]
        r.wait_idle()
        assert _gets(proxy, digest)[start:] == [f"bytes=0-{(1 << 20) - 1}"]   # first read: none
        assert r.pread(step, step) == layer[step:2 * step]                      # in order
        r.wait_idle()
        assert _gets(proxy, digest)[start + 1:] == [f"bytes={1 << 20}-{(2 << 20) - 1}"]
        for off in range(2 * step, len(layer), step):
            assert r.pread(step, off) == layer[off:off + step]
        r.wait_idle()
        got = _gets(proxy, digest)[start:]
        # later windows in larger requests (READAHEAD_REQUEST): every byte fetched once
        spans = sorted(tuple(int(x) for x in g[len("bytes="):].split("-")) for g in got)
        assert spans[0] == (0, (1 << 20) - 1) and spans[-1][1] == len(layer) - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))
        assert all(b - a < READAHEAD_REQUEST for a, b in spans)
        assert r.hits > r.misses


def test_cache_only_never_fetches(proxy: FaultProxy, images: tuple[PushedImage, PushedImage],
                                  tmp_path: pathlib.Path) -> None:
    """What the mount's main thread may read: pages already verified by this process; a read
    that would fetch, or open a blob not opened yet, raises NotCached without a request."""
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    with _open(proxy, img, tmp_path) as src:
        with cache_only(), pytest.raises(NotCached):
            src.range_reader(digest, len(layer))        # its cache files are not open yet
        r = src.range_reader(digest, len(layer))
        assert isinstance(r, CachedRangeReader)
        start = len(_gets(proxy, digest))
        with cache_only():
            with pytest.raises(NotCached):
                r.pread(100, 10)
            assert not r.cached(10, 100)
        assert len(_gets(proxy, digest)) == start      # nothing fetched
        assert r.pread(100, 10) == layer[10:110]         # outside: fetched (pages 0-15)
        r.wait_idle()
        fetched = len(_gets(proxy, digest))
        with cache_only():
            assert r.cached(5000, 60000)
            assert r.pread(90, 20) == layer[20:110]        # behind the run's end: no read-ahead
            assert not r.cached((1 << 20) - 10, 20)     # runs into page 16
            with pytest.raises(NotCached):
                r.pread(20, (1 << 20) - 10)
        assert len(_gets(proxy, digest)) == fetched


def test_read_ahead_follows_two_runs_through_one_blob(
        proxy: FaultProxy, images: tuple[PushedImage, PushedImage], tmp_path: pathlib.Path) -> None:
    """Reads going forward from two places of one blob, taking turns (two files stored apart
    read side by side): each run gets its own read-ahead, so after the first read of each, every
    read finds its pages cached, and no byte is fetched twice."""
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    start = len(_gets(proxy, digest))
    step, middle = 64 << 10, 24 * PAGE
    with _open(proxy, img, tmp_path) as src:
        r = src.range_reader(digest)
        assert isinstance(r, CachedRangeReader)
        a, b = 0, middle
        while a < middle or b < len(layer):
            for off, stop in ((a, middle), (b, len(layer))):
                if off < stop:
                    n = min(step, stop - off)
                    assert r.pread(n, off) == layer[off:off + n]
                    r.wait_idle()
            a, b = a + step, b + step
        assert r.misses == 2 and r.hits > 40
        spans = sorted(tuple(int(x) for x in g[len("bytes="):].split("-"))
                       for g in _gets(proxy, digest)[start:])
        assert all(b[0] > a[1] for a, b in zip(spans, spans[1:], strict=False))


def test_waiting_reader_gets_its_piece_before_the_request_ends(
        proxy: FaultProxy, images: tuple[PushedImage, PushedImage], tmp_path: pathlib.Path) -> None:
    """A 4 MiB request held after its first MiB: a read of that MiB is answered from the cache
    at once, a read further on waits; no page is marked on disk before the whole run is
    durable."""
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    piece = PIECE_PAGES * PAGE
    gate, first_in = threading.Event(), threading.Event()
    cache = BlobCache(tmp_path)
    with open_source(f"docker://{proxy.host}/{img.repo}:{img.tag}", plain_http=True) as src:
        remote = src.range_reader(digest)

        def held(n: int, offset: int, progress: object) -> bytes | bytearray:
            def report(view: memoryview, got: int) -> None:
                progress(view, got)     # type: ignore[operator]
                if got >= piece and not gate.is_set():
                    first_in.set()
                    gate.wait(60)
            return remote.fetch(n, offset, report)   # type: ignore[attr-defined]

        r = CachedRangeReader(cache, digest, len(layer), remote.pread, max_request=4 << 20,
                              readahead=False, fetch_into=held)
        results: dict[str, bytes] = {}

        def read(name: str, n: int, off: int) -> threading.Thread:
            t = threading.Thread(target=lambda: results.__setitem__(name, r.pread(n, off)))
            t.start()
            return t
        try:
            whole = read("whole", len(layer), 0)
            assert first_in.wait(30)
            early = read("early", 1000, piece - 5000)
            late = read("late", 1000, 2 * piece + 7)
            early.join(10)
            assert not early.is_alive() and results["early"] == layer[piece - 5000:piece - 4000]
            late.join(0.5)
            assert late.is_alive() and whole.is_alive()     # its piece is not in yet
            assert _ready_pages(tmp_path, digest) == []     # nothing durable, nothing marked
        finally:
            gate.set()
        whole.join(30)
        late.join(30)
        assert results["whole"] == layer and results["late"] == layer[2 * piece + 7:2 * piece + 1007]
        assert _ready_pages(tmp_path, digest) == list(range((len(layer) + PAGE - 1) // PAGE))
        r.close()


def test_request_cut_after_its_first_piece(proxy: FaultProxy,
                                           images: tuple[PushedImage, PushedImage],
                                           tmp_path: pathlib.Path) -> None:
    """The connection drops after a request's first MiB was handed over: the retry starts
    from byte 0 again, the rest arrives, every byte is right and every page marked."""
    img = images[0]
    layer, digest = img.layers[0], img.layer_digests[0]
    with open_source(f"docker://{proxy.host}/{img.repo}:{img.tag}", plain_http=True) as src:
        remote = src.range_reader(digest)
        r = CachedRangeReader(BlobCache(tmp_path), digest, len(layer), remote.pread,
                              max_request=4 << 20, readahead=False,
                              fetch_into=remote.fetch)   # type: ignore[attr-defined]
        dropped, gets = len([e for e in proxy.log if e.get("dropped")]), len(_gets(proxy, digest))
        proxy.drop(1, after=3 * PIECE_PAGES * PAGE // 2)
        assert r.pread(len(layer), 0) == layer
        assert len([e for e in proxy.log if e.get("dropped")]) == dropped + 1
        assert len(_gets(proxy, digest)) == gets + 2
        r.close()
    assert _ready_pages(tmp_path, digest) == list(range((len(layer) + PAGE - 1) // PAGE))
    with _open(proxy, img, tmp_path) as src:        # from the file alone
        before = len(_gets(proxy, digest))
        r = src.range_reader(digest)
        assert r.pread(len(layer), 0) == layer
        assert len(_gets(proxy, digest)) == before
        r.close()
