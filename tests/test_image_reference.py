"""Reference parsing (skopeo's syntax and rules) and reading blobs in place from archives."""

from __future__ import annotations

import os

import pytest
from conftest import needs_root
from corpus import Layer, pattern
from imagekit import nydusfs, umoci_image

from nydusfs.image import ImageError, looks_like_reference, parse, parse_platform
from nydusfs.image.manifest import Platform


@pytest.mark.parametrize("text, transport, path, ref", [
    ("oci:dir", "oci", "dir", None),
    ("oci:/abs/dir:v1.0", "oci", "/abs/dir", "v1.0"),
    ("oci:dir:sha256:" + "a" * 64, "oci", "dir", "sha256:" + "a" * 64),
    ("oci-archive:img.tar:latest", "oci-archive", "img.tar", "latest"),
    ("docker-archive:img.tar:example.com/app:v2", "docker-archive", "img.tar", "example.com/app:v2"),
    ("docker-archive:img.tar:@1", "docker-archive", "img.tar", "@1"),
    ("docker://registry.local:5000/app:v1", "docker", "registry.local:5000/app:v1", None),
])
def test_parse(text, transport, path, ref):
    r = parse(text)
    assert (r.transport, r.path, r.ref) == (transport, path, ref)
    assert str(r) == text
    assert looks_like_reference(text)


@pytest.mark.parametrize("text, words", [
    ("image.boot", "not an image reference"),
    ("http://x", "unknown transport 'http'"),
    ("docker:x", "docker://HOST/REPO"),
    ("oci:", "empty path"),
    ("oci:dir:", "empty reference"),
    ("oci:dir:sha256:ABC", "invalid digest"),
    ("oci:dir:-bad", "invalid image reference name"),
    ("oci:dir:has space", "invalid image reference name"),
    ("docker-archive:f.tar:@x y", "invalid docker-archive reference"),
    ("docker://", "empty registry reference"),
])
def test_parse_errors(text, words):
    with pytest.raises(ImageError, match=words):
        parse(text)


def test_plain_paths_are_not_references():
    for text in ("image.boot", "/tmp/layer.tar", "blobs/abc", "ftp:x", "./oci:dir"):
        assert not looks_like_reference(text)


def test_platforms():
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform("linux", "arm64", "v8").matches(Platform("linux", "arm64"))
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert Platform("linux", "amd64").matches(Platform("linux", "amd64", "v3"))
    for bad in ("linux", "linux/", "a/b/c/d"):
        with pytest.raises(ImageError, match="OS/ARCH"):
            parse_platform(bad)


@needs_root
def test_archives_are_read_in_place(tmp_path, monkeypatch):
    """mount/dump/check of an oci-archive and a docker-archive read blobs at the members' offsets
    inside the archive: the only file extracted is the bootstrap, into the cache."""
    from nydusfs.image.nydus import open_nydus

    cache = tmp_path / "cache"
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(cache))
    src = umoci_image(tmp_path / "src", "v1", [Layer().file("f", pattern(200_000, 2))], tmp_path / "t")
    archive = tmp_path / "nydus.tar"
    r = nydusfs("convert", src, f"oci-archive:{archive}:n", "--no-progress", "--cache-dir", str(tmp_path / "lc"))
    assert r.returncode == 0, r.stderr
    with open_nydus(f"oci-archive:{archive}:n") as image:
        ino = image.resolve("/f")
        assert image.read(ino, 0, 300_000) == pattern(200_000, 2)
        readers = list(image.blob_store._readers.values())
        assert readers and all(r.path == str(archive) and r.offset > 0 for r in readers)
    assert {p.suffix for p in (cache / "bootstraps").iterdir()} == {".boot", ".json"}
    r = nydusfs("check", src, f"oci-archive:{archive}:n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(tmp_path / "nydus.tar.tmp")


def test_image_and_convert_load_no_ui_or_fuse_module(tmp_path):
    """Converting and reading an image in a fresh interpreter pulls in neither rich, pyfuse3 nor
    trio (they belong to the CLI and the mount)."""
    import json
    import subprocess
    import sys

    code = f"""
import os, sys, json
os.environ["NYDUSFS_CACHE_DIR"] = {str(tmp_path / 'cache')!r}
from nydusfs import sample
from nydusfs.convert import convert, ConvertOptions
from nydusfs.image.nydus import open_nydus
src = sample.write_layout({str(tmp_path / 'src')!r})
convert(src, "oci:{tmp_path / 'out'}:n", ConvertOptions(jobs=2))
with open_nydus("oci:{tmp_path / 'out'}:n") as image:
    assert image.read(image.resolve("/etc/hostname"), 0, 100) == b"sample-updated\\n"
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    modules = json.loads(out.stdout.splitlines()[-1])
    assert [m for m in modules if m.split(".")[0] in ("rich", "pyfuse3", "trio")] == []
    assert "nydusfs.convert" in modules and "nydusfs.image.nydus" in modules
