"""The registry backend against a real registry (docker-registry 2.8) in all three
configurations: anonymous HTTP, htpasswd Basic over TLS, bearer tokens. skopeo pushes the test
images and reads back what we push, as an independent client."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import subprocess

import pytest
from registry_helpers import PASSWORD, USER, PushedImage, Registry, free_port, push_test_image

from nydusfs.registry import RegistryError, open_source, open_target, parse_reference
from nydusfs.registry.credentials import lookup

# the registry fixtures (anon_registry, basic_registry, token_registry, any_registry)
pytest_plugins = ["registry_fixtures"]

# --- references and credentials (no server) ----------------------------------------------------


@pytest.mark.parametrize("text,host,repo,tag,digest", [
    ("docker://127.0.0.1:5000/app:1.2-nydus", "127.0.0.1:5000", "app", "1.2-nydus", None),
    ("docker://registry.example/a/b/c", "registry.example", "a/b/c", "latest", None),
    ("docker://localhost/x@sha256:" + "a" * 64, "localhost", "x", None, "sha256:" + "a" * 64),
    ("docker://alpine", "docker.io", "library/alpine", "latest", None),
    ("docker://user/img:3", "docker.io", "user/img", "3", None),
    ("docker://[::1]:5000/r:t", "[::1]:5000", "r", "t", None),
])
def test_reference_parse(text: str, host: str, repo: str, tag: str | None,
                         digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.host, ref.repo, ref.tag, ref.digest) == (host, repo, tag, digest)


@pytest.mark.parametrize("text,needle", [
    ("oci:dir", "not a registry reference"),
    ("docker://host.example/Upper", "repository component 'Upper'"),
    ("docker://host.example/r@sha256:abc", "digest"),
    ("docker://host.example/r:bad tag", "tag"),
    ("docker://host.example/", "no repository"),
])
def test_reference_errors(text: str, needle: str) -> None:
    with pytest.raises(RegistryError, match=needle):
        parse_reference(text)


def test_loopback_hosts() -> None:
    assert parse_reference("docker://127.0.0.1:1/a").is_loopback
    assert parse_reference("docker://localhost:1/a").is_loopback
    assert parse_reference("docker://[::1]:1/a").is_loopback
    assert not parse_reference("docker://registry.example/a").is_loopback


def _authfile(path: pathlib.Path, key: str, user: str, password: str) -> pathlib.Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {key: {"auth": auth}}}))
    return path


def test_credentials_lookup_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert lookup("r.example", "a/b") is None
    _authfile(tmp_path / "home/.docker/config.json", "r.example", "docker", "p1")
    assert lookup("r.example", "a/b").username == "docker"
    _authfile(tmp_path / "run/containers/auth.json", "r.example/a", "podman", "p2")
    assert lookup("r.example", "a/b").username == "podman"          # more specific file first
    assert lookup("other.example", "a").username if lookup("other.example", "a") else True
    env = _authfile(tmp_path / "env.json", "https://r.example", "env", "p3")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env))
    c = lookup("r.example", "a/b")
    assert (c.username, c.password) == ("env", "p3")
    explicit = _authfile(tmp_path / "explicit.json", "r.example/a/b", "file", "p4")
    assert lookup("r.example", "a/b", authfile=explicit).username == "file"
    assert lookup("r.example", "a/b", creds="cli:p5", authfile=explicit).username == "cli"
    with pytest.raises(RegistryError, match="no such file"):
        lookup("r.example", "a", authfile=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RegistryError, match="bad.json"):
        lookup("r.example", "a", authfile=tmp_path / "bad.json")


# --- reads in all three configurations ---------------------------------------------------------

@pytest.fixture(scope="module")
def pushed(any_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> PushedImage:
    return push_test_image(any_registry, tmp_path_factory.mktemp("img"))


def _ref(reg: Registry, img: PushedImage) -> str:
    return f"docker://{reg.host}/{img.repo}:{img.tag}"


def test_manifest_and_small_blobs(any_registry: Registry, pushed: PushedImage) -> None:
    with open_source(_ref(any_registry, pushed), **any_registry.options()) as src:
        data, media = src.index_or_manifest()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == pushed.digests["manifest"]
        assert media == "application/vnd.oci.image.manifest.v1+json"
        config = src.read_blob(pushed.digests["config"], 1 << 20)
        assert json.loads(config)["rootfs"]["diff_ids"] == pushed.layer_digests
        with pytest.raises(RegistryError, match="more than the 10"):
            src.read_blob(pushed.digests["config"], 10)
    by_digest = f"docker://{any_registry.host}/{pushed.repo}@{pushed.digests['manifest']}"
    with open_source(by_digest, **any_registry.options()) as src:
        assert src.index_or_manifest()[0] == data


def test_range_reads(any_registry: Registry, pushed: PushedImage) -> None:
    layer = pushed.layers[0]
    with open_source(_ref(any_registry, pushed), **any_registry.options()) as src:
        r = src.range_reader(pushed.layer_digests[0])
        assert r.size == len(layer)
        for offset, size in [(0, 1), (0, 4096), (12345, 70000), (len(layer) - 10, 10),
                             (len(layer) - 10, 100), (1 << 20, 1 << 20), (len(layer), 5)]:
            assert r.pread(size, offset) == layer[offset:offset + size], (offset, size)
        ranges = [e for e in src.client.stats.blobs.values()]
        assert sum(b.bytes for b in ranges) < 3 * len(layer) // 2   # ranges, not whole blobs


def test_stream_whole_blob(any_registry: Registry, pushed: PushedImage) -> None:
    with open_source(_ref(any_registry, pushed), **any_registry.options()) as src:
        for digest, layer in zip(pushed.layer_digests, pushed.layers, strict=True):
            with src.open_blob(digest) as f:
                assert f.read() == layer


def test_push_then_skopeo_reads(any_registry: Registry, pushed: PushedImage,
                                tmp_path: pathlib.Path) -> None:
    """Copy the image to another repository with RegistryTarget; skopeo copies it out again
    and every blob matches."""
    src_ref = _ref(any_registry, pushed)
    dst_ref = f"docker://{any_registry.host}/copied/app:v2"
    with open_source(src_ref, **any_registry.options()) as src, \
            open_target(dst_ref, **any_registry.options()) as dst:
        manifest, media = src.index_or_manifest()
        doc = json.loads(manifest)
        for desc in [doc["config"], *doc["layers"]]:
            assert not dst.has_blob(desc["digest"])
            with src.open_blob(desc["digest"]) as f:
                dst.put_blob(desc["digest"], desc["size"], f)
            assert dst.has_blob(desc["digest"])
        dst.put_manifest(manifest, media)
        dst.commit()
    out = tmp_path / "out"
    subprocess.run(["skopeo", "copy", "--quiet", *any_registry.skopeo_args("src"),
                    f"docker://{any_registry.host}/copied/app:v2", f"dir:{out}"],
                   check=True, capture_output=True, timeout=120)
    assert (out / "manifest.json").read_bytes() == manifest
    for digest, layer in zip(pushed.layer_digests, pushed.layers, strict=True):
        assert (out / digest[7:]).read_bytes() == layer


def test_second_push_skips_existing_blobs(any_registry: Registry, pushed: PushedImage) -> None:
    """Blobs the repository has are not uploaded again (seen in the registry's request log);
    a blob of one chunk goes up in one PUT, without PATCH."""
    dst_ref = f"docker://{any_registry.host}/twice/app:v1"
    for _ in range(2):
        before = any_registry.log_file.read_text().count("/v2/twice/app/blobs/uploads")
        with open_source(_ref(any_registry, pushed), **any_registry.options()) as src, \
                open_target(dst_ref, **any_registry.options()) as dst:
            manifest, media = src.index_or_manifest()
            doc = json.loads(manifest)
            for desc in [doc["config"], *doc["layers"]]:
                with src.open_blob(desc["digest"]) as f:
                    dst.put_blob(desc["digest"], desc["size"], f)
            dst.put_manifest(manifest, media)
            dst.commit()
        log = any_registry.log_file.read_text()
        uploads = log.count("/v2/twice/app/blobs/uploads") - before
    assert uploads == 0, "the second push uploaded blobs again"
    assert "PATCH /v2/twice/app/blobs/uploads" not in log          # 3 MiB < one 8 MiB chunk
    assert log.count('"PUT /v2/twice/app/blobs/uploads') == 3


def test_push_asks_once_whether_the_registry_has_a_blob(any_registry: Registry,
                                                        pushed: PushedImage) -> None:
    """has_blob then put_blob (what convert does) costs one HEAD per blob, not two; put_blob
    alone still asks, and skips a blob the repository has."""
    dst_ref = f"docker://{any_registry.host}/heads/app:v1"

    def heads(digest: str) -> int:
        return any_registry.log_file.read_text().count(f'"HEAD /v2/heads/app/blobs/{digest}')
    with open_source(_ref(any_registry, pushed), **any_registry.options()) as src, \
            open_target(dst_ref, **any_registry.options()) as dst:
        manifest, media = src.index_or_manifest()
        doc = json.loads(manifest)
        config, layer, other = doc["config"], doc["layers"][0], doc["layers"][1]
        for desc in (config, layer):
            assert not dst.has_blob(desc["digest"])
            with src.open_blob(desc["digest"]) as f:
                dst.put_blob(desc["digest"], desc["size"], f)
        with src.open_blob(other["digest"]) as f:      # no has_blob before: put_blob asks
            dst.put_blob(other["digest"], other["size"], f)
        with src.open_blob(layer["digest"]) as f:      # pushed already: asked, and skipped
            dst.put_blob(layer["digest"], layer["size"], f)
        dst.put_manifest(manifest, media)
        dst.commit()
    assert heads(config["digest"]) == 1 and heads(other["digest"]) == 1
    assert heads(layer["digest"]) == 2
    log = any_registry.log_file.read_text()
    assert log.count('"PUT /v2/heads/app/blobs/uploads') == 3


def test_push_mounts_from_same_registry(any_registry: Registry, pushed: PushedImage) -> None:
    """With mount_from on the same registry, no blob bytes are uploaded (no PATCH)."""
    dst_ref = f"docker://{any_registry.host}/mounted/app:v1"
    with open_source(_ref(any_registry, pushed), **any_registry.options()) as src, \
            open_target(dst_ref, mount_from=_ref(any_registry, pushed),
                        **any_registry.options()) as dst:
        manifest, media = src.index_or_manifest()
        for digest in pushed.layer_digests:
            dst.put_blob(digest, 0, src.open_blob(digest))
        assert dst.client.stats.blobs[pushed.layer_digests[0]].bytes == 0
        dst.put_blob(pushed.digests["config"], 0, src.open_blob(pushed.digests["config"]))
        dst.put_manifest(manifest, media)
        dst.commit()
    log = any_registry.log_file.read_text()
    assert "mounted/app/blobs/uploads/?mount=" in log or "mounted/app/blobs/uploads?mount=" in log
    assert "PATCH /v2/mounted/app/blobs/uploads" not in log
    with open_source(dst_ref, **any_registry.options()) as again:
        assert again.index_or_manifest()[0] == manifest


def test_chunked_upload(any_registry: Registry, tmp_path: pathlib.Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob larger than one upload chunk goes up in several PATCH requests."""
    import io

    import nydusfs.registry.source as source
    monkeypatch.setattr(source, "UPLOAD_CHUNK", 256 << 10)
    data = hashlib.sha256(b"x").digest() * 40000      # 1.28 MB
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open_target(f"docker://{any_registry.host}/chunked/blob:v1",
                     **any_registry.options()) as dst:
        dst.put_blob(digest, len(data), io.BytesIO(data))
        assert dst.has_blob(digest)
        with pytest.raises(RegistryError, match="expected size"):
            bad = b"y" * 1000
            dst.put_blob("sha256:" + hashlib.sha256(b"z").hexdigest(), 1000, io.BytesIO(bad))
    assert any_registry.log_file.read_text().count("PATCH /v2/chunked/blob/blobs/uploads") >= 5


# --- errors: one clear line each ---------------------------------------------------------------

def test_unknown_repo_and_tag(any_registry: Registry, pushed: PushedImage) -> None:
    with pytest.raises(RegistryError, match=r"manifest nope: not found \(404"):
        open_source(f"docker://{any_registry.host}/{pushed.repo}:nope",
                    **any_registry.options()).index_or_manifest()
    with pytest.raises(RegistryError, match="not found"):
        open_source(f"docker://{any_registry.host}/no/such:v1",
                    **any_registry.options()).index_or_manifest()


def test_wrong_credentials_basic(basic_registry: Registry) -> None:
    with pytest.raises(RegistryError, match=f"user '{USER}' .*401") as e:
        open_source(f"docker://{basic_registry.host}/x:y", creds=f"{USER}:wrong",
                    cert_dir=basic_registry.cert_dir).index_or_manifest()
    assert "\n" not in str(e.value)
    with pytest.raises(RegistryError, match="no credentials"):
        open_source(f"docker://{basic_registry.host}/x:y",
                    cert_dir=basic_registry.cert_dir).index_or_manifest()


def test_wrong_credentials_token(token_registry: Registry) -> None:
    with pytest.raises(RegistryError, match=f"refused user '{USER}'.*401"):
        open_source(f"docker://{token_registry.host}/x:y",
                    creds=f"{USER}:wrong").index_or_manifest()
    with pytest.raises(RegistryError, match="refused anonymous access"):
        open_source(f"docker://{token_registry.host}/x:y").index_or_manifest()


def test_untrusted_certificate(basic_registry: Registry) -> None:
    with pytest.raises(RegistryError, match="certificate not trusted"):
        open_source(f"docker://{basic_registry.host}/x:y", creds=f"{USER}:{PASSWORD}")
    # --tls-verify=false reaches it
    with pytest.raises(RegistryError, match="not found"):
        open_source(f"docker://{basic_registry.host}/x:y", creds=f"{USER}:{PASSWORD}",
                    tls_verify=False).index_or_manifest()


def test_registry_down() -> None:
    port = free_port()
    with pytest.raises(RegistryError, match=f"cannot reach the registry at .*127.0.0.1:{port}.*"
                                            "(refused|gave up)"):
        open_source(f"docker://127.0.0.1:{port}/x:y")
