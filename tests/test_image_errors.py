"""Broken inputs: corruptions of a converted image are reported by the right rule (exit 1);
bad references and broken layouts are one line, exit 2, and leave DST as it was."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import pytest
from conftest import needs_root
from corpus import Layer, pattern
from imagekit import blob, nydusfs, sha256, tagged, umoci_image

pytestmark = needs_root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("image-errors")
    env = {"NYDUSFS_CACHE_DIR": str(base / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NYDUSFS_CACHE_DIR", env["NYDUSFS_CACHE_DIR"])
        yield _build(base, env)


def _build(base: pathlib.Path, env: dict[str, str]) -> dict[str, pathlib.Path]:
    layers = [Layer().file("a/data", pattern(400_000, 4)).file("a/small", b"s"),
              Layer().file("b/data", pattern(300_000, 5)), Layer().symlink("c", "a/data")]
    umoci_image(base / "src", "v1", layers, base / "t", ["--config.env", "E=1"])
    umoci_image(base / "other", "v1", [Layer().file("x", b"other image")], base / "t2")
    for name in ("src", "other"):
        r = nydusfs("convert", f"oci:{base / name}:v1", f"oci:{base / (name + '-nydus')}:n", "--no-progress",
                    env=env)
        assert r.returncode == 0, r.stderr
    return {"base": base, "src": base / "src", "nydus": base / "src-nydus", "other": base / "other-nydus"}


def copy_image(built, name: str) -> pathlib.Path:
    dst = built["base"] / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(built["nydus"], dst)
    return dst


def put(layout: pathlib.Path, data: bytes) -> str:
    (layout / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return sha256(data)


def rewrite(layout: pathlib.Path, edit_manifest=None, edit_config=None) -> None:
    """Change the manifest and/or config of the image tagged n, keeping the layout consistent."""
    _, manifest = tagged(layout, "n")
    if edit_config:
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        edit_config(config)
        data = json.dumps(config).encode()
        manifest["config"].update(digest=put(layout, data), size=len(data))
    if edit_manifest:
        edit_manifest(manifest, layout)
    data = json.dumps(manifest).encode()
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=put(layout, data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


def check(built, layout: pathlib.Path, alone: bool = False):
    args = [f"oci:{layout}:n"] if alone else [f"oci:{built['src']}:v1", f"oci:{layout}:n"]
    return nydusfs("check", *args, "--json", "-")


def failed_rules(r) -> set[str]:
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    return {name for name, rule in doc["rules"].items() if not rule["ok"]}


def test_clean_image_passes(built):
    r = check(built, built["nydus"])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert list(doc["rules"]) == ["manifest", "bootstrap", "config", "filesystem"]


def test_changed_env_is_the_config_rule(built):
    layout = copy_image(built, "env")
    rewrite(layout, edit_config=lambda c: c["config"].__setitem__("Env", ["E=2"]))
    assert failed_rules(check(built, layout)) == {"config"}


def test_dropped_blob_layer_is_the_bootstrap_rule(built):
    layout = copy_image(built, "dropped")

    def drop(config):
        del config["rootfs"]["diff_ids"][1]

    def edit(m, _):
        del m["layers"][1]
    rewrite(layout, edit_manifest=edit, edit_config=drop)
    assert "bootstrap" in failed_rules(check(built, layout, alone=True))


def test_wrong_diff_id_is_the_manifest_rule(built):
    layout = copy_image(built, "diffid")
    rewrite(layout, edit_config=lambda c: c["rootfs"]["diff_ids"].__setitem__(0, "sha256:" + "1" * 64))
    r = check(built, layout, alone=True)
    assert failed_rules(r) == {"manifest"}
    assert json.loads(r.stdout)["rules"]["manifest"]["findings"][0]["where"] == "layer 0 diff_id"


def test_wrong_bootstrap_diff_id_is_the_bootstrap_rule(built):
    layout = copy_image(built, "bootdiff")
    rewrite(layout, edit_config=lambda c: c["rootfs"]["diff_ids"].__setitem__(-1, "sha256:" + "2" * 64))
    assert failed_rules(check(built, layout, alone=True)) == {"bootstrap"}


def test_flipped_byte_in_a_blob_is_the_chunks_rule(built):
    layout = copy_image(built, "flipped")
    _, manifest = tagged(layout, "n")
    path = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert failed_rules(check(built, layout, alone=True)) == {"chunks"}
    assert failed_rules(check(built, layout)) == {"filesystem"}  # /a/data reads differently


def test_other_images_bootstrap_is_the_bootstrap_rule(built):
    layout = copy_image(built, "swapped")
    _, other = tagged(built["other"], "n")
    boot = other["layers"][-1]
    shutil.copy(built["other"] / "blobs" / "sha256" / boot["digest"][7:],
                layout / "blobs" / "sha256" / boot["digest"][7:])

    def swap(m, _):
        m["layers"][-1] = boot
    rewrite(layout, edit_manifest=swap)
    assert "bootstrap" in failed_rules(check(built, layout, alone=True))
    assert {"bootstrap", "filesystem"} <= failed_rules(check(built, layout))


# --- bad references and broken layouts: one line, exit 2, DST untouched -------------------------

def snapshot(path: pathlib.Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"dir" for p in sorted(path.rglob("*"))}


def one_line_error(r, verb: str = "convert") -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nydusfs {verb}: error: "), r.stderr
    return lines[0]


def broken_sources(built) -> dict[str, tuple[str, str]]:
    base = built["base"]
    src = built["src"]
    cases: dict[str, tuple[str, str]] = {}

    def layout(name: str) -> pathlib.Path:
        d = base / "broken" / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(src, d)
        return d

    d = layout("index-not-json")
    (d / "index.json").write_text("{not json")
    cases["index-not-json"] = (f"oci:{d}:v1", "not valid JSON")
    d = layout("manifest-missing")
    digest, manifest = tagged(src, "v1")
    (d / "blobs" / "sha256" / digest[7:]).unlink()
    cases["manifest-missing"] = (f"oci:{d}:v1", "is missing")
    d = layout("manifest-tampered")
    (d / "blobs" / "sha256" / digest[7:]).write_bytes(blob(src, digest).replace(b'"layers"', b'"layers" '))
    cases["manifest-tampered"] = (f"oci:{d}:v1", "does not match its digest")
    d = layout("layer-missing")
    (d / "blobs" / "sha256" / manifest["layers"][1]["digest"][7:]).unlink()
    cases["layer-missing"] = (f"oci:{d}:v1", "is missing")
    d = layout("layer-truncated")
    p = d / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    p.write_bytes(p.read_bytes()[:1000])
    cases["layer-truncated"] = (f"oci:{d}:v1", "")
    d = layout("no-oci-layout")
    (d / "oci-layout").unlink()
    cases["no-oci-layout"] = (f"oci:{d}:v1", "oci-layout is missing")
    cases["no-such-tag"] = (f"oci:{src}:nope", "no image named 'nope'")
    cases["no-such-dir"] = (f"oci:{base / 'nowhere'}:v1", "does not exist")
    cases["unknown-transport"] = ("ftp:x", "unknown transport 'ftp'")
    cases["not-a-reference"] = ("plainfile", "not an image reference")
    cases["bad-digest-ref"] = (f"oci:{src}:sha256:abc", "invalid digest")
    cases["empty-ref"] = (f"oci:{src}:", "empty reference")
    (base / "not-a-tar").write_bytes(b"hello" * 200)
    cases["archive-not-tar"] = (f"oci-archive:{base / 'not-a-tar'}", "not a readable tar")
    cases["docker-archive-empty"] = (f"docker-archive:{base / 'not-a-tar'}", "not a readable tar")
    cases["nydus-as-source"] = (f"oci:{built['nydus']}:n", "not an OCI/Docker tar layer")
    return cases


CASES = ["index-not-json", "manifest-missing", "manifest-tampered", "layer-missing", "layer-truncated",
         "no-oci-layout", "no-such-tag", "no-such-dir", "unknown-transport", "not-a-reference",
         "bad-digest-ref", "empty-ref", "archive-not-tar", "docker-archive-empty", "nydus-as-source"]


@pytest.mark.parametrize("case", CASES)
def test_bad_source_leaves_dst_untouched(built, case):
    src, words = broken_sources(built)[case]
    dst = built["base"] / f"dst-{case}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(built["other"], dst)  # an existing layout with an image in it
    before = snapshot(dst)
    parent = sorted(os.listdir(dst.parent))
    r = nydusfs("convert", src, f"oci:{dst}:n", "--no-progress", "--no-cache")
    line = one_line_error(r)
    assert words in line
    assert snapshot(dst) == before
    assert sorted(os.listdir(dst.parent)) == parent  # no staging directory left behind


@pytest.mark.parametrize("dst, words", [
    ("oci:{base}/other-nydus/blobs/sha256", "neither empty nor an OCI image layout"),
    ("oci:{base}/newdir:sha256:" + "0" * 64, "not a digest"),
    ("docker-archive:{base}/x.tar", "cannot write docker-archive"),
    ("oci:{base}/no/such/parent:n", "does not exist"),
])
def test_bad_target_is_one_line(built, dst, words):
    r = nydusfs("convert", f"oci:{built['src']}:v1", dst.format(base=built["base"]), "--no-progress")
    assert words in one_line_error(r)


def test_bad_platform_and_options(built):
    src = f"oci:{built['src']}:v1"
    out = f"oci:{built['base']}/opt-out:n"
    assert "OS/ARCH" in one_line_error(nydusfs("convert", src, out, "--platform", "linux"))
    assert "not linux/s390x" in one_line_error(nydusfs("convert", src, out, "--platform", "linux/s390x"))
    assert "chunk-size" in one_line_error(nydusfs("convert", src, out, "--chunk-size", "3000"))
    assert not (built["base"] / "opt-out").exists()


def test_registry_reference_without_backend_is_one_line(built):
    r = nydusfs("convert", "docker://127.0.0.1:1/none:tag", f"oci:{built['base']}/reg-out:n", "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("verb", ["dump", "check"])
def test_other_verbs_report_bad_references_in_one_line(built, verb):
    for ref, words in [(f"oci:{built['base']}/nowhere:n", "does not exist"),
                       (f"oci:{built['src']}:v1", "not a Nydus image")]:
        assert words in one_line_error(nydusfs(verb, ref), verb)


def test_mount_reports_bad_references_in_one_line(built, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    line = one_line_error(nydusfs("mount", f"oci:{built['src']}:v1", str(mnt)), "mount")
    assert "not a Nydus image" in line
