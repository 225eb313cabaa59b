"""convert, check, dump and mount with docker:// references, on a real registry (Debian's
docker-registry, anonymous): an image pushed by skopeo is converted from the registry, and a
converted image is pushed to it and read back by skopeo and nydusfs."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import needs_fuse, needs_root
from corpus import Layer, pattern
from imagekit import nydusfs, skopeo_copy, umoci_image
from test_check_umoci import layers_with_deletions

pytest_plugins = ["registry_fixtures"]
pytestmark = [needs_root]


@pytest.fixture
def pushed(tmp_path, monkeypatch, anon_registry) -> tuple[str, str]:
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "cache"))
    src = umoci_image(tmp_path / "src", "v1", layers_with_deletions(), tmp_path / "t")
    remote = f"docker://{anon_registry.host}/image-test:v1"
    skopeo_copy(src, remote, "--dest-tls-verify=false")
    return src, remote


def test_convert_from_and_to_a_registry(tmp_path, pushed):
    src, remote = pushed
    out = f"oci:{tmp_path / 'out'}:n"
    r = nydusfs("convert", remote, out, "--no-progress")
    assert r.returncode == 0, r.stderr
    r = nydusfs("check", remote, out)
    assert r.returncode == 0, r.stdout + r.stderr
    target = remote.replace(":v1", ":v1-nydus")
    r = nydusfs("convert", src, target, "--no-progress", "--output-json", "-")
    assert r.returncode == 0, r.stderr
    digest = json.loads(r.stdout[r.stdout.index("{\n"):])["digest"]
    inspected = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", target],
                                          check=True, capture_output=True, text=True).stdout)
    assert inspected["Digest"] == digest
    for args in ((src, target), (target,)):
        r = nydusfs("check", *args)
        assert r.returncode == 0, r.stdout + r.stderr
    r = nydusfs("dump", target, "--json", "--no-chunks")
    assert r.returncode == 0 and json.loads(r.stdout)["inodes"], r.stderr


@needs_fuse
def test_mount_from_a_registry(tmp_path, pushed, mounts):
    src, remote = pushed
    target = remote.replace(":v1", ":small")
    small = umoci_image(tmp_path / "small", "v1", [Layer().file("data", pattern(300_000, 6))], tmp_path / "t2")
    assert nydusfs("convert", small, target, "--no-progress").returncode == 0
    m = mounts.mount(target)
    assert (m.path / "data").read_bytes() == pattern(300_000, 6)
