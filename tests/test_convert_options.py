"""convert's options: chunk dict (as an image reference and as a bootstrap file), compressor,
chunk size, prefetch patterns, the default platform of an index, and the target layout shared
by several images."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from conftest import needs_root
from corpus import Layer, pattern
from imagekit import blob, nydusfs, tagged, umoci_image

pytestmark = needs_root


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "cache"))
    return {"NYDUSFS_CACHE_DIR": str(tmp_path / "cache")}


def bootstrap_of(layout, tag: str) -> bytes:
    _, manifest = tagged(layout, tag)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layout, manifest["layers"][-1]["digest"])))) as tf:
        return tf.extractfile("image/image.boot").read()


def dump(layout, tag: str) -> dict:
    r = nydusfs("dump", f"oci:{layout}:{tag}", "--json", "--no-chunks")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("form", ["reference", "bootstrap"])
def test_chunk_dict_blobs_are_appended(tmp_path, env, form):
    shared = pattern(600_000, 7)
    base = umoci_image(tmp_path / "src", "base", [Layer().file("lib/shared.so", shared)], tmp_path / "t")
    app = umoci_image(tmp_path / "src", "app", [Layer().file("opt/copy.so", shared).file("opt/own", b"own")],
                      tmp_path / "t")
    out = tmp_path / "out"
    assert nydusfs("convert", base, f"oci:{out}:base", "--no-progress").returncode == 0
    if form == "reference":
        chunk_dict = f"oci:{out}:base"
    else:
        (tmp_path / "dict.boot").write_bytes(bootstrap_of(out, "base"))
        # the dict's blobs are looked up next to the bootstrap file, by id
        _, m = tagged(out, "base")
        d = m["layers"][0]["digest"]
        (tmp_path / d[7:]).write_bytes(blob(out, d))
        chunk_dict = f"bootstrap={tmp_path / 'dict.boot'}"
    r = nydusfs("convert", app, f"oci:{out}:app", "--chunk-dict", chunk_dict, "--output-json", "-",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    _, base_m = tagged(out, "base")
    _, app_m = tagged(out, "app")
    # [own blob] [dict blob] [bootstrap]; the dict blob is the base image's
    assert len(app_m["layers"]) == 3
    assert app_m["layers"][1]["digest"] == base_m["layers"][0]["digest"]
    assert app_m["layers"][1]["annotations"] == {"containerd.io/snapshot/nydus-blob": "true"}
    config = json.loads(blob(out, app_m["config"]["digest"]))
    assert config["rootfs"]["diff_ids"][:2] == [d["digest"] for d in app_m["layers"][:2]]
    r = nydusfs("check", app, f"oci:{out}:app")
    assert r.returncode == 0, r.stdout + r.stderr
    blobs = dump(out, "app")["blobs"]
    assert {b["blob_id"] for b in blobs} == {app_m["layers"][0]["digest"][7:], base_m["layers"][0]["digest"][7:]}


def test_compressor_chunk_size_prefetch(tmp_path, env):
    src = umoci_image(tmp_path / "src", "v1", [Layer().file("a/big", pattern(300_000, 1)).file("b/x", b"x")],
                      tmp_path / "t")
    (tmp_path / "prefetch").write_text("/a\nrelative\n")
    out = tmp_path / "out"
    r = nydusfs("convert", src, f"oci:{out}:n", "--compressor", "lz4_block", "--chunk-size", "0x10000",
                "--prefetch-patterns", str(tmp_path / "prefetch"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "relative" in r.stderr  # the warning about the relative pattern
    doc = dump(out, "n")
    assert {b["compressor"] for b in doc["blobs"]} == {"lz4_block"}
    assert {b["chunk_size"] for b in doc["blobs"]} == {0x10000}
    assert [p["path"] for p in doc["prefetch"]] == ["/a"]
    assert nydusfs("check", src, f"oci:{out}:n").returncode == 0
    # other options, other cache key: converted again, not taken from the cache
    r = nydusfs("convert", src, f"oci:{out}:m", "--output-json", "-", "--no-progress")
    assert json.loads(r.stdout[r.stdout.index("{\n"):])["layers_converted"] == 1


def test_target_layout_holds_several_images(tmp_path, env):
    a = umoci_image(tmp_path / "src", "a", [Layer().file("f", b"a")], tmp_path / "t")
    b = umoci_image(tmp_path / "src", "b", [Layer().file("f", b"b")], tmp_path / "t")
    out = tmp_path / "out"
    for src, tag in ((a, "a"), (b, "b"), (a, "a")):  # re-converting a replaces its entry only
        assert nydusfs("convert", src, f"oci:{out}:{tag}", "--no-progress").returncode == 0
    index = json.loads((out / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(names) == ["a", "b"]
    for src, tag in ((a, "a"), (b, "b")):
        assert nydusfs("check", src, f"oci:{out}:{tag}").returncode == 0


def test_convert_into_the_source_layout_under_another_tag(tmp_path, env):
    src = umoci_image(tmp_path / "app", "v1", [Layer().file("f", pattern(100_000, 3))], tmp_path / "t")
    blobs_before = set((tmp_path / "app" / "blobs" / "sha256").iterdir())
    r = nydusfs("convert", src, f"oci:{tmp_path / 'app'}:v1-nydus", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert blobs_before <= set((tmp_path / "app" / "blobs" / "sha256").iterdir())
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"]
                   for m in json.loads((tmp_path / "app" / "index.json").read_text())["manifests"])
    assert names == ["v1", "v1-nydus"]
    assert nydusfs("check", src, f"oci:{tmp_path / 'app'}:v1-nydus").returncode == 0
    r = nydusfs("convert", src, src, "--no-progress")
    assert r.returncode == 2 and "replace the source image" in r.stderr


def test_a_changed_cache_entry_is_converted_again(tmp_path, env):
    src = umoci_image(tmp_path / "src", "v1", [Layer().file("f", pattern(50_000, 8))], tmp_path / "t")
    cache = tmp_path / "layer-cache"

    def convert(tag: str) -> dict:
        r = nydusfs("convert", src, f"oci:{tmp_path / tag}", "--cache-dir", str(cache), "--output-json", "-",
                    "--no-progress")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout[r.stdout.index("{\n"):])

    first = convert("a")
    assert convert("b")["layers_reused"] == 1
    blob_file = cache / "blobs" / first["images"][0]["layers"][0]["nydus"][7:]
    data = bytearray(blob_file.read_bytes())
    data[10] ^= 1
    blob_file.write_bytes(bytes(data))  # damaged in place: not trusted any more
    again = convert("c")
    assert again["layers_converted"] == 1 and again["digest"] == first["digest"]
    assert nydusfs("check", src, f"oci:{tmp_path / 'c'}").returncode == 0
    # an untagged target layout gets one entry per image, not one per convert
    convert("c")
    assert len(json.loads((tmp_path / "c" / "index.json").read_text())["manifests"]) == 1
