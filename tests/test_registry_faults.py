"""The registry client through the fault-injecting proxy (tests/registry_fault_proxy.py), in
front of a real registry: bursts of 5xx and 429, connections dropped mid-body, Range ignored,
redirects to object storage, tokens expiring during a read loop, a registry that goes away
and comes back."""

from __future__ import annotations

import pathlib
import time
from typing import Iterator

import pytest
from registry_fault_proxy import BlobServer, FaultProxy
from registry_helpers import PushedImage, Registry, push_test_image, start_registry

from nydusfs.registry import RegistryError, open_source
from nydusfs.registry.source import RegistrySource

# the registry fixtures (anon_registry, basic_registry, token_registry, any_registry)
pytest_plugins = ["registry_fixtures"]


@pytest.fixture(scope="module")
def anon_image(anon_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> PushedImage:
    return push_test_image(anon_registry, tmp_path_factory.mktemp("img"))


@pytest.fixture(scope="module")
def anon_proxy(anon_registry: Registry) -> Iterator[FaultProxy]:
    blobs = BlobServer(str(anon_registry.storage))
    proxy = FaultProxy(anon_registry.url, blob_server=blobs)
    yield proxy
    proxy.close()
    blobs.close()


@pytest.fixture
def proxy(anon_proxy: FaultProxy) -> Iterator[FaultProxy]:
    anon_proxy.clear()
    yield anon_proxy
    anon_proxy.clear()


def _open(proxy: FaultProxy, img: PushedImage, **kw: object) -> RegistrySource:
    return open_source(f"docker://{proxy.host}/{img.repo}:{img.tag}", plain_http=True, **kw)


def test_5xx_burst_retried(proxy: FaultProxy, anon_image: PushedImage) -> None:
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image) as src:
        r = src.range_reader(digest)
        proxy.fail(3, 500)
        assert r.pread(100000, 5000) == layer[5000:105000]
        assert src.client.stats.blobs[digest].retries == 3
        proxy.fail(2, 502, match="/manifests/")
        proxy.fail(1, 503, match="/manifests/")
        assert src.client.get_manifest(anon_image.tag)[0]
        assert src.client.stats.retries == 6


def test_429_with_retry_after(proxy: FaultProxy, anon_image: PushedImage) -> None:
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image) as src:
        r = src.range_reader(digest)
        proxy.fail(2, 429, retry_after="1")
        started = len(proxy.log)
        assert r.pread(4096, 0) == layer[:4096]
        tried = [e for e in proxy.log[started:] if "/blobs/" in e["path"]]
        assert [e["status"] for e in tried] == [429, 429, 206]


def test_mid_body_drops_retried(proxy: FaultProxy, anon_image: PushedImage) -> None:
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image) as src:
        r = src.range_reader(digest)
        proxy.drop(3, after=1000)
        assert r.pread(300000, 77) == layer[77:300077]
        assert len([e for e in proxy.log if e.get("dropped")]) == 3
        assert src.client.stats.blobs[digest].retries == 3


def test_stream_resumes_after_drop(proxy: FaultProxy, anon_image: PushedImage) -> None:
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image) as src:
        proxy.drop(1, after=500000)
        with src.open_blob(digest) as f:
            assert f.read() == layer
        resumed = [e for e in proxy.requests("GET", digest[7:]) if e["range"]]
        assert resumed and resumed[-1]["range"].startswith("bytes=") and \
            resumed[-1]["range"].endswith("-") and resumed[-1]["range"] != "bytes=0-"


def test_range_ignored(proxy: FaultProxy, anon_image: PushedImage) -> None:
    """A 200 with the whole blob: the right bytes, and the body not read past the range."""
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image) as src:
        r = src.range_reader(digest)
        proxy.ignore_range = True
        assert r.pread(1000, 2000) == layer[2000:3000]
        assert r.pread(10, len(layer) - 10) == layer[-10:]
        assert [e["status"] for e in proxy.requests("GET", digest[7:])][-2:] == [200, 200]


def test_wrong_content_range_is_an_error(proxy: FaultProxy, anon_image: PushedImage) -> None:
    with _open(proxy, anon_image) as src:
        r = src.range_reader(anon_image.layer_digests[0])
        proxy.shift_range = True
        with pytest.raises(RegistryError, match=r"asked for bytes 100-199, the 206 answer has "
                                                r"Content-Range 'bytes 101-200/\d+'"):
            r.pread(100, 100)


def test_permanent_failure_gives_up_in_time(proxy: FaultProxy, anon_image: PushedImage) -> None:
    with _open(proxy, anon_image, retry_time=1.0) as src:
        r = src.range_reader(anon_image.layer_digests[0])
        proxy.fail(10000, 503)
        with pytest.raises(RegistryError, match=r"503 .*gave up after \d+ attempts") as e:
            r.pread(10, 0)
        assert "\n" not in str(e.value)
        proxy.clear()
        assert r.pread(10, 0) == anon_image.layers[0][:10]   # the next read tries again


def test_redirect_anonymous(proxy: FaultProxy, anon_image: PushedImage) -> None:
    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    assert proxy.blob_server is not None
    with _open(proxy, anon_image) as src:
        r = src.range_reader(digest)
        proxy.redirect = True
        before = len(proxy.requests("GET", digest[7:]))
        for off in (0, 100000, 2000000):
            assert r.pread(5000, off) == layer[off:off + 5000]
        assert len(proxy.requests("GET", digest[7:])) - before == 1   # target cached per blob


# --- token registry: redirects without Authorization, expiry, GET/POST -----------------------

@pytest.fixture(scope="module")
def short_tokens(registry_tools: None, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Registry, PushedImage]]:
    reg = start_registry("token", tmp_path_factory.mktemp("short"), token_ttl=4)
    try:
        yield reg, push_test_image(reg, tmp_path_factory.mktemp("img"))
    finally:
        reg.stop()


@pytest.fixture
def token_proxy(short_tokens: tuple[Registry, PushedImage]) -> Iterator[FaultProxy]:
    reg, _ = short_tokens
    blobs = BlobServer(str(reg.storage))
    proxy = FaultProxy(reg.url, blob_server=blobs)
    yield proxy
    proxy.close()
    blobs.close()


def test_redirect_without_authorization(token_proxy: FaultProxy,
                                        short_tokens: tuple[Registry, PushedImage]) -> None:
    reg, img = short_tokens
    layer, digest = img.layers[0], img.layer_digests[0]
    blobs = token_proxy.blob_server
    assert blobs is not None
    with _open(token_proxy, img, **reg.options()) as src:
        r = src.range_reader(digest)
        token_proxy.redirect = True
        assert r.pread(4096, 1000) == layer[1000:5096]
        assert r.pread(4096, 900000) == layer[900000:904096]
        assert len(blobs.log) == 2 and all(e["authorization"] is None for e in blobs.log)
        assert all(e["status"] == 206 for e in blobs.log)
        gets = len(token_proxy.requests("GET", digest[7:]))
        blobs.rotate()          # presigned URLs expire: 403, back to the registry once
        assert r.pread(100, 5) == layer[5:105]
        assert [e["status"] for e in blobs.log[2:]] == [403, 206]
        assert len(token_proxy.requests("GET", digest[7:])) == gets + 1


def test_token_expiry_during_read_loop(token_proxy: FaultProxy,
                                       short_tokens: tuple[Registry, PushedImage]) -> None:
    """4-second tokens, reads for 10 seconds, tokens revoked twice in the middle (the proxy
    answers 401 with the registry's challenge): no read fails."""
    reg, img = short_tokens
    layer, digest = img.layers[0], img.layer_digests[0]
    with _open(token_proxy, img, **reg.options()) as src:
        r = src.range_reader(digest)
        start = time.monotonic()
        n = 0
        revoked = 0
        while time.monotonic() - start < 10:
            off = (n * 7919 * 13) % (len(layer) - 4096)
            assert r.pread(4096, off) == layer[off:off + 4096]
            n += 1
            elapsed = time.monotonic() - start
            tok = src.client.auth.token
            # revoke a token the next read will still use (not one about to be renewed)
            if (revoked < 2 and elapsed > 2 + 4 * revoked and tok is not None
                    and tok.expires_at - time.monotonic() > 2.5):
                token_proxy.revoke_tokens()
                revoked += 1
            time.sleep(0.02)
        assert src.client.auth.token_requests >= 3        # renewed, not one token for all
        assert any(e.get("refused_token") for e in token_proxy.log)
        assert src.client.stats.blobs[digest].errors == 0


def test_token_post_when_get_refused(registry_tools: None, tmp_path: pathlib.Path) -> None:
    reg = start_registry("token", tmp_path / "reg")
    try:
        img = push_test_image(reg, tmp_path, repo="post/only")   # skopeo asks with GET
        reg.start_token_server(methods="POST")
        with open_source(f"docker://{reg.host}/post/only:{img.tag}", **reg.options()) as src:
            r = src.range_reader(img.layer_digests[1])
            assert r.pread(r.size, 0) == img.layers[1]
        methods = [e["method"] for e in reg.token_requests() if e["user"] == "tester"]
        assert "GET" in methods and methods[-1] == "POST"
    finally:
        reg.stop()


def test_registry_down_then_back(registry_tools: None, tmp_path: pathlib.Path) -> None:
    """Reads fail with one error while the registry is down and work again, with the same
    source, once it is back."""
    reg = start_registry("anon", tmp_path / "reg")
    try:
        img = push_test_image(reg, tmp_path)
        layer, digest = img.layers[0], img.layer_digests[0]
        with open_source(f"docker://{reg.host}/{img.repo}:{img.tag}", retry_time=1.0) as src:
            r = src.range_reader(digest)
            assert r.pread(100, 0) == layer[:100]
            reg.stop_registry()
            with pytest.raises(RegistryError, match="ConnectError.*gave up"):
                r.pread(100, 1000)
            reg.start()
            assert r.pread(100, 1000) == layer[1000:1100]
    finally:
        reg.stop()


def test_push_retries(proxy: FaultProxy, anon_registry: Registry, anon_image: PushedImage,
                      tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads through 5xx bursts and lost answers (the PATCH or PUT reached the registry, the
    reply did not): the blob arrives whole, skopeo reads the pushed image back."""
    import io
    import json
    import subprocess

    import nydusfs.registry.source as source
    from nydusfs.registry import open_target
    monkeypatch.setattr(source, "UPLOAD_CHUNK", 256 << 10)
    dst_ref = f"docker://{proxy.host}/pushed/retries:v1"
    with _open(proxy, anon_image) as src, open_target(dst_ref, plain_http=True) as dst:
        manifest, media = src.index_or_manifest()
        doc = json.loads(manifest)
        proxy.fail(2, 500, match="/blobs/uploads/", methods=("POST", "PATCH"))
        proxy.fail(1, 503, match="/blobs/uploads/", methods=("PUT",))
        proxy.lose(1, match="/blobs/uploads/", methods=("PATCH",))
        for desc in [doc["config"], *doc["layers"]]:
            data = src.read_blob(desc["digest"], 1 << 30)
            dst.put_blob(desc["digest"], desc["size"], io.BytesIO(data))
            if desc is doc["config"]:
                proxy.lose(1, match="/blobs/uploads/", methods=("PUT",))
        proxy.fail(2, 502, match="/manifests/", methods=("PUT",))
        dst.put_manifest(manifest, media)
        dst.commit()
    assert not proxy.rules, "every fault was met"
    assert [e for e in proxy.log if e.get("lost")]
    out = tmp_path / "out"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{anon_registry.host}/pushed/retries:v1", f"dir:{out}"],
                   check=True, capture_output=True, timeout=120)
    for digest, layer in zip(anon_image.layer_digests, anon_image.layers, strict=True):
        assert (out / digest[7:]).read_bytes() == layer


def test_eight_parallel_readers_through_faults(proxy: FaultProxy, anon_image: PushedImage,
                                               tmp_path: pathlib.Path) -> None:
    """8 threads reading random ranges through the cache while 5xx, 429 and cut bodies come
    and go: every byte right, nothing fails."""
    import random
    import threading

    layer, digest = anon_image.layers[0], anon_image.layer_digests[0]
    with _open(proxy, anon_image, cache_dir=tmp_path / "cache") as src:
        r = src.range_reader(digest)
        proxy.fail(6, 500)
        proxy.fail(4, 429, retry_after="0")
        proxy.drop(6, after=30000)
        errors: list[BaseException] = []

        def reader(seed: int) -> None:
            rnd = random.Random(seed)
            try:
                for _ in range(30):
                    off = rnd.randrange(len(layer))
                    n = rnd.randrange(1, 150000)
                    assert r.pread(n, off) == layer[off:off + n]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert not proxy.rules, "every fault was met"
        assert src.client.stats.blobs[digest].retries >= 16
