"""convert on images made by real tools (umoci, skopeo), checked by nydusfs check and read
back by independent readers (skopeo inspect/copy)."""

from __future__ import annotations

import json
import pathlib

import imagekit
import pytest
from conftest import needs_root
from corpus import Layer, pattern
from imagekit import nydusfs, skopeo_copy, skopeo_digest, skopeo_raw, umoci_image
from test_check_umoci import layers_with_deletions

pytestmark = needs_root


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("convert-tools")


@pytest.fixture(scope="module")
def env(work) -> dict[str, str]:
    return {"NYDUSFS_CACHE_DIR": str(work / "cache")}


@pytest.fixture(scope="module")
def sources(work) -> dict[str, str]:
    """The same image as an OCI layout (umoci), a docker-archive and a layout with Docker media
    types (both by skopeo)."""
    oci = umoci_image(work / "src", "v1", layers_with_deletions(), work / "tars",
                      ["--config.env", "A=1", "--config.cmd", "/bin/sh", "--config.workingdir", "/srv"])
    skopeo_copy(oci, f"docker-archive:{work / 'src-docker.tar'}:example/app:v1")
    skopeo_copy(oci, f"oci:{work / 'src-v2s2'}:v1", "--format", "v2s2")
    return {"oci": oci, "docker-archive": f"docker-archive:{work / 'src-docker.tar'}",
            "v2s2": f"oci:{work / 'src-v2s2'}:v1"}


def convert(src: str, dst: str, env: dict[str, str], *extra: str) -> dict:
    r = nydusfs("convert", src, dst, "--output-json", "-", "--no-progress", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout[r.stdout.index("{\n"):])


@pytest.mark.parametrize("kind", ["oci", "docker-archive", "v2s2"])
@pytest.mark.parametrize("version", ["5", "6"])
def test_convert_then_check_is_clean(work, env, sources, kind, version):
    out = f"oci:{work / f'out-{kind}-{version}'}:nydus"
    result = convert(sources[kind], out, env, "--fs-version", version)
    assert len(result["images"][0]["layers"]) == 5
    r = nydusfs("check", sources[kind], out, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for rule in ("manifest", "bootstrap", "config"):
        assert f"rule {rule}: ok" in r.stdout
    assert "equal: the image holds exactly what the layers hold" in r.stdout
    # skopeo (this version) does not read Docker media types out of an OCI layout: read it plainly
    manifest = imagekit.tagged(work / f"out-{kind}-{version}", "nydus")[1]
    docker = kind != "oci"
    assert manifest["mediaType"] == ("application/vnd.docker.distribution.manifest.v2+json" if docker
                                     else "application/vnd.oci.image.manifest.v1+json")
    assert manifest["layers"][-1]["annotations"]["containerd.io/snapshot/nydus-fs-version"] == version
    r = nydusfs("check", out, env=env)  # the Nydus image alone: manifest, bootstrap, every chunk
    assert r.returncode == 0 and "rule chunks: ok" in r.stdout, r.stdout + r.stderr
    if kind == "oci" and version == "6":  # and what the kernel shows through a mount of it
        r = nydusfs("check", sources[kind], out, "--through-mount", env=env)
        assert r.returncode == 0 and "the mounted image holds exactly" in r.stdout, r.stdout + r.stderr


def test_oci_flag_turns_docker_media_types_into_oci(work, env, sources):
    out = f"oci:{work / 'out-oci-flag'}:nydus"
    convert(sources["v2s2"], out, env, "--oci")
    manifest = skopeo_raw(out)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_skopeo_reads_and_copies_the_output_unchanged(work, env, sources):
    out = f"oci:{work / 'out-skopeo'}:nydus"
    result = convert(sources["oci"], out, env)
    assert skopeo_digest(out) == result["digest"]
    copy = f"oci:{work / 'copy'}:nydus"
    skopeo_copy(out, copy)
    assert skopeo_digest(copy) == result["digest"]
    archive = f"oci-archive:{work / 'out.tar'}:nydus"
    again = convert(sources["oci"], archive, env)
    assert again["digest"] == result["digest"]
    assert skopeo_digest(archive) == result["digest"]
    skopeo_copy(archive, f"oci:{work / 'copy2'}:nydus")
    assert skopeo_digest(f"oci:{work / 'copy2'}:nydus") == result["digest"]
    # the copies are Nydus images nydusfs reads: check against the source, in place in the archive
    for ref in (copy, archive):
        r = nydusfs("check", sources["oci"], ref, env=env)
        assert r.returncode == 0, r.stdout + r.stderr


def test_convert_is_deterministic(work, env, sources):
    a = convert(sources["oci"], f"oci:{work / 'det-a'}:x", env)
    b = convert(sources["oci"], f"oci:{work / 'det-b'}:x", env, "--no-cache", "-j", "1")
    assert a["digest"] == b["digest"]
    assert a["layers_converted"] == 0 and b["layers_converted"] == 5  # a came from the cache


def test_two_platform_index(work, env):
    layout = work / "multi"
    umoci_image(layout, "amd", [Layer().file("arch", b"amd64").file("big", pattern(300_000, 1))], work / "t")
    umoci_image(layout, "arm", [Layer().file("arch", b"arm64"), Layer().whiteout("nothing").file("x", b"x")],
                work / "t")
    ref = imagekit.two_platform_index(layout, "multi", "amd", "arm")
    for plat in ("linux/amd64", "linux/arm64"):
        out = f"oci:{work / ('out-' + plat.replace('/', '-'))}:n"
        convert(ref, out, env, "--platform", plat)
        r = nydusfs("check", ref, out, "--platform", plat, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    out = f"oci:{work / 'out-all'}:n"
    result = convert(ref, out, env, "--all-platforms")
    index = skopeo_raw(out)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    assert {i["platform"] for i in result["images"]} == {"linux/amd64", "linux/arm64"}
    for plat in ("linux/amd64", "linux/arm64"):
        r = nydusfs("check", ref, out, "--platform", plat, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    merged = f"oci:{work / 'out-merged'}:n"
    convert(ref, merged, env, "--merge-platform")
    index = skopeo_raw(merged)
    kinds = [m.get("artifactType") for m in index["manifests"]]
    assert kinds == [None, None, "application/vnd.nydus.image.manifest.v1+json",
                     "application/vnd.nydus.image.manifest.v1+json"]
    assert "mediaType" not in index
    for plat in ("linux/amd64", "linux/arm64"):
        r = nydusfs("check", ref, merged, "--platform", plat, env=env)
        assert r.returncode == 0, r.stdout + r.stderr


def test_second_convert_converts_only_the_new_layer(work, env):
    layout = work / "versions"
    base = [Layer().file(f"l{i}/data", pattern(100_000, i)).file(f"l{i}/small", b"%d" % i) for i in range(3)]
    v1 = umoci_image(layout, "v1", [*base, Layer().file("app", b"version 1")], work / "tv")
    v2 = umoci_image(layout, "v2", [*base, Layer().file("app", b"version 2")], work / "tv")
    m1, m2 = skopeo_raw(v1), skopeo_raw(v2)
    assert [d["digest"] for d in m1["layers"][:3]] == [d["digest"] for d in m2["layers"][:3]]
    env2 = {"NYDUSFS_CACHE_DIR": str(work / "cache-versions")}
    first = convert(v1, f"oci:{work / 'nydus-versions'}:v1", env2)
    second = convert(v2, f"oci:{work / 'nydus-versions'}:v2", env2)
    assert first["layers_converted"] == 4
    assert second["layers_converted"] == 1 and second["layers_reused"] == 3
    for tag, src in (("v1", v1), ("v2", v2)):
        r = nydusfs("check", src, f"oci:{work / 'nydus-versions'}:{tag}", env=env2)
        assert r.returncode == 0, r.stdout + r.stderr


def test_docker_archive_references(work, env, sources):
    archive = sources["docker-archive"]
    digests = set()
    for ref in (f"{archive}:example/app:v1", f"{archive}:docker.io/example/app:v1", f"{archive}:@0"):
        digests.add(convert(ref, f"oci:{work / 'out-da'}:n", env)["images"][0]["source_manifest"])
    assert len(digests) == 1  # the same image, however it is named
    for ref, words in ((f"{archive}:@1", "image @1 does not exist"),
                       (f"{archive}:example/other:v1", "no image tagged")):
        r = nydusfs("convert", ref, f"oci:{work / 'out-da2'}:n", env=env)
        assert r.returncode == 2 and words in r.stderr, r.stderr


def test_unpack_of_the_converted_image_equals_umoci_unpack_of_the_source(work, env, sources):
    """`nydusfs unpack oci:OUT:TAG`, extracted by GNU tar, is the tree umoci unpacks from the
    source image (compared by check's tree walker against umoci's rootfs as the layers)."""
    import subprocess

    out = f"oci:{work / 'out-unpack'}:n"
    convert(sources["oci"], out, env)
    tar = work / "unpacked.tar"
    r = nydusfs("unpack", out, "-o", str(tar), env=env)
    assert r.returncode == 0, r.stderr
    extracted = work / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-x", "-p", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-f", str(tar),
                    "-C", str(extracted)], check=True)
    layout, tag = sources["oci"][4:].rsplit(":", 1)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(work / "umoci-bundle")], check=True,
                   capture_output=True)
    rootfs = work / "umoci-bundle" / "rootfs"
    # the two trees as check sees them: umoci's rootfs is the "layer", the tar's tree the mounted
    # side; mtimes aside, because umoci stamps directories no tar entry names with the time of
    # its unpack
    r = nydusfs("check", "--mounted", str(extracted), "--layers", str(rootfs), "--ignore", "mtime", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # and every field, mtimes included, against check's own reference from the source layers
    _, manifest = imagekit.tagged(pathlib.Path(layout), tag)
    layers = [str(pathlib.Path(layout) / "blobs/sha256" / d["digest"][7:]) for d in manifest["layers"]]
    r = nydusfs("check", "--mounted", str(extracted), "--layers", *layers, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
