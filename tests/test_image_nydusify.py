"""Images shaped as nydusify writes them, assembled here from the spec (image.md) with json,
tarfile and gzip, not by `nydusfs convert`: Docker media types, the legacy nydusify <= 2.1 shape
(RAFS v5, nydus-blob-ids, image.boot at the tar root), merged-platform indexes marked by
artifactType and by the older os.features. mount, dump and check read each of them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile

import pytest
from conftest import needs_fuse, needs_root
from corpus import Layer, pattern
from imagekit import blob, nydusfs, sha256, tagged, umoci_image

pytestmark = [needs_root, needs_fuse]

ANN = "containerd.io/snapshot/"
BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
OCI_M, DOCKER_M = "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"


def layers() -> list[Layer]:
    return [Layer().dir("etc").file("etc/os", b"nydus\n").file("bin/sh", pattern(250_000, 9), mode=0o755),
            Layer().symlink("sh", "bin/sh"),
            Layer().whiteout("etc/os").file("etc/new", b"new").hardlink("bin/sh2", "bin/sh")]


def put(layout: pathlib.Path, data: bytes) -> dict:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return {"digest": sha256(data), "size": len(data)}


def tar_gz(members: list[tuple[str, bytes | None]]) -> tuple[bytes, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o444
                tf.addfile(ti, io.BytesIO(data))
    return raw.getvalue(), gzip.compress(raw.getvalue())


def nydus_manifest(tmp: pathlib.Path, src: pathlib.Path, out: pathlib.Path, *, docker: bool, version: str,
                   legacy: bool = False, config_type: str | None = None) -> bytes:
    """Per-layer `nydusfs create` (layout B blobs named by their sha256) and `nydusfs merge`,
    then the image around them by hand, as §2-§4 and §9 describe."""
    _, manifest = tagged(src, "v1")
    work = tmp / f"build-{docker}-{version}-{legacy}"
    work.mkdir()
    blobs = []
    for i, layer in enumerate(manifest["layers"]):
        tmpfile = work / f"layer{i}"
        r = subprocess.run([sys.executable, "-m", "nydusfs", "create", "-", "-o", str(tmpfile), "--layout", "B",
                            "--whiteout-spec", "none", "--fs-version", version],
                           input=blob(src, layer["digest"]), capture_output=True, check=False)
        assert r.returncode == 0, r.stderr
        data = tmpfile.read_bytes()
        named = work / hashlib.sha256(data).hexdigest()
        tmpfile.rename(named)
        blobs.append((named, data))
    r = nydusfs("merge", "--bootstrap", str(work / "image.boot"), *[str(p) for p, _ in blobs])
    assert r.returncode == 0, r.stderr
    boot = (work / "image.boot").read_bytes()
    tar, gz = tar_gz([("image.boot", boot)] if legacy else [("image", None), ("image/image.boot", boot)])
    layers_out = []
    for _, data in blobs:
        d = {"mediaType": BLOB, **put(out, data)}
        if not legacy:
            d["annotations"] = {ANN + "nydus-blob": "true"}
        layers_out.append(d)
    boot_ann = {ANN + "nydus-bootstrap": "true"}
    if legacy:
        boot_ann[ANN + "nydus-blob-ids"] = json.dumps([hashlib.sha256(d).hexdigest() for _, d in blobs])
    else:
        boot_ann[ANN + "nydus-fs-version"] = version
    layers_out.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                       else "application/vnd.oci.image.layer.v1.tar+gzip", **put(out, gz),
                       "annotations": boot_ann})
    config = json.loads(blob(src, manifest["config"]["digest"]))
    config["rootfs"]["diff_ids"] = [d["digest"] for d in layers_out[:-1]] + [sha256(tar)]
    config["history"] = [] if legacy else config.get("history", []) + [
        {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}]
    config_data = json.dumps(config).encode()
    ctype = config_type or ("application/vnd.docker.container.image.v1+json" if docker
                            else "application/vnd.oci.image.config.v1+json")
    doc = {"schemaVersion": 2, "mediaType": DOCKER_M if docker else OCI_M,
           "config": {"mediaType": ctype, **put(out, config_data)}, "layers": layers_out}
    return json.dumps(doc, indent=3).encode()


def write_index(out: pathlib.Path, entries: list[dict], tag: str) -> None:
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for e in entries:
        e.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = tag
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


@pytest.fixture
def src(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.setenv("NYDUSFS_CACHE_DIR", str(tmp_path / "cache"))
    umoci_image(tmp_path / "src", "v1", layers(), tmp_path / "tars", ["--config.env", "X=1"])
    return tmp_path / "src"


def read_back(ref: str, src_ref: str, mounts, extra: tuple[str, ...] = ()) -> None:
    r = nydusfs("check", src_ref, ref, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    r = nydusfs("check", ref, *extra)
    assert r.returncode == 0 and "rule chunks: ok" in r.stdout, r.stdout + r.stderr
    r = nydusfs("dump", ref, "--json", "--no-chunks")
    assert r.returncode == 0, r.stderr
    paths = {i["path"] for i in json.loads(r.stdout)["inodes"]}
    assert {"/etc/new", "/bin/sh", "/bin/sh2", "/sh"} <= paths and "/etc/os" not in paths
    if not extra:
        m = mounts.mount(ref)
        assert (m.path / "bin" / "sh").read_bytes() == pattern(250_000, 9)
        assert (m.path / "bin" / "sh").stat().st_ino == (m.path / "bin" / "sh2").stat().st_ino
        assert (m.path / "etc" / "new").read_bytes() == b"new"
        assert not (m.path / "etc" / "os").exists()


@pytest.mark.parametrize("docker", [True, False], ids=["docker", "oci"])
def test_single_manifest(tmp_path, src, mounts, docker):
    out = tmp_path / "nydus"
    data = nydus_manifest(tmp_path, src, out, docker=docker, version="6")
    write_index(out, [{"mediaType": DOCKER_M if docker else OCI_M, **put(out, data)}], "n")
    read_back(f"oci:{out}:n", f"oci:{src}:v1", mounts)


def test_legacy_nydusify_v5(tmp_path, src, mounts):
    out = tmp_path / "legacy"
    data = nydus_manifest(tmp_path, src, out, docker=True, version="5", legacy=True)
    write_index(out, [{"mediaType": DOCKER_M, **put(out, data)}], "n")
    read_back(f"oci:{out}:n", f"oci:{src}:v1", mounts)
    r = nydusfs("dump", f"oci:{out}:n", "--json", "--no-chunks")
    assert json.loads(r.stdout)["version"] in (5, "5")


@pytest.mark.parametrize("marker", ["artifactType", "os.features"])
def test_merged_platform_index(tmp_path, src, mounts, marker):
    out = tmp_path / "merged"
    data = nydus_manifest(tmp_path, src, out, docker=False, version="6",
                          config_type="application/vnd.nydus.image.config.v1+json")
    src_digest, src_manifest = tagged(src, "v1")
    for d in [src_manifest["config"], *src_manifest["layers"]]:
        put(out, blob(src, d["digest"]))
    src_bytes = blob(src, src_digest)
    put(out, src_bytes)
    platform = {"architecture": "amd64", "os": "linux"}
    nydus_entry = {"mediaType": OCI_M, **put(out, data), "platform": dict(platform)}
    if marker == "artifactType":
        nydus_entry["artifactType"] = "application/vnd.nydus.image.manifest.v1+json"
    else:
        nydus_entry["platform"]["os.features"] = ["nydus.remoteimage.v1"]
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_M, "digest": src_digest, "size": len(src_bytes), "platform": platform},
        nydus_entry]}, indent=2).encode()
    write_index(out, [{"mediaType": "application/vnd.oci.image.index.v1+json", **put(out, index)}], "n")
    # the same index is both images: its OCI manifest is the source, its Nydus one the target
    extra = () if _host_is_amd64() else ("--platform", "linux/amd64")
    read_back(f"oci:{out}:n", f"oci:{out}:n", mounts, extra)


def _host_is_amd64() -> bool:
    import platform

    return platform.machine() in ("x86_64", "amd64")
