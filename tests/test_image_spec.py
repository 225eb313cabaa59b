"""convert's output, field by field, against docs of the Nydus image layout (spec image.md §2-§4).

The expected values are computed here from the source layout and the output blobs with json,
hashlib, gzip, tarfile, zstandard and struct only, never with nydusfs.image or nydusfs.convert."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile

import pytest
import zstandard
from conftest import needs_root
from corpus import Layer, pattern
from imagekit import blob, nydusfs, sha256, tagged, umoci_image

pytestmark = needs_root

BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
ANN = "containerd.io/snapshot/"


def toc(data: bytes) -> dict[str, bytes]:
    """Sections of a Nydus blob named by its ToC (spec §3): name -> stored content, decompressed."""
    tail = data[-512:]
    if tail[:14] != b"rafs.blob.toc\0":  # RAFS v5 blobs have none (nydusify adds blob-toc for v6)
        assert tail[:11] == b"image.boot\0"
        return {}
    size = int(tail[124:136].rstrip(b"\0 ") or b"0", 8)
    raw = data[-512 - size:-512]
    out = {}
    for i in range(0, size, 128):
        flags, _, name, _digest, off, csize, usize = struct.unpack_from("<II16s32sQQQ", raw, i)
        content = data[off:off + csize]
        if flags & 0x2:
            content = zstandard.ZstdDecompressor().decompress(content, max_output_size=usize)
        out[name.rstrip(b"\0").decode()] = content
    return out


@pytest.mark.parametrize("version", ["5", "6"])
def test_output_follows_the_spec(tmp_path, version):
    layers = [Layer().dir("bin").file("bin/tool", pattern(300_000, 3), mode=0o755).file("etc/a", b"a"),
              Layer().symlink("link", "bin/tool"),                    # no data: a data-less blob
              Layer().whiteout("etc/a").file("etc/b", b"b" * 5000)]
    src = umoci_image(tmp_path / "src", "v1", layers, tmp_path / "t", ["--config.env", "K=V"])
    env = {"NYDUSFS_CACHE_DIR": str(tmp_path / "cache")}
    r = nydusfs("convert", src, f"oci:{tmp_path / 'out'}:n", "--fs-version", version, "--no-progress", env=env)
    assert r.returncode == 0, r.stderr

    src_digest, src_manifest = tagged(tmp_path / "src", "v1")
    src_config_raw = blob(tmp_path / "src", src_manifest["config"]["digest"])
    src_config = json.loads(src_config_raw)
    digest, manifest = tagged(tmp_path / "out", "n")
    out = tmp_path / "out"

    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers", "annotations"]
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"] == {ANN + "nydus-source-digest": src_digest,
                                       ANN + "nydus-source-reference": src,
                                       ANN + "nydus-fs-version": version}
    *blobs, boot = manifest["layers"]
    assert len(blobs) == 3  # one per source layer, in order, data-less ones too
    for d in blobs:
        data = blob(out, d["digest"])          # digest = sha256 of the whole blob file
        assert d == {"mediaType": BLOB, "digest": sha256(data), "size": len(data),
                     "annotations": {ANN + "nydus-blob": "true"}}
    boot_gz = blob(out, boot["digest"])
    assert boot == {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(boot_gz),
                    "size": len(boot_gz), "annotations": {ANN + "nydus-bootstrap": "true",
                                                          ANN + "nydus-fs-version": version}}

    # the config: new diff_ids, one appended history entry, everything else as in the source
    config_raw = blob(out, manifest["config"]["digest"])
    assert len(config_raw) == manifest["config"]["size"]
    config = json.loads(config_raw)
    boot_tar = gzip.decompress(boot_gz)
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": [d["digest"] for d in blobs] + [sha256(boot_tar)]}
    assert config["history"] == src_config.get("history", []) + [
        {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}]
    assert {k: v for k, v in config.items() if k not in ("rootfs", "history")} == \
        {k: v for k, v in src_config.items() if k not in ("rootfs", "history")}
    assert "K=V" in config["config"]["Env"]

    # the bootstrap layer: image/, image/image.boot, and (v6) a blob.meta per blob with chunks
    with tarfile.open(fileobj=io.BytesIO(boot_tar)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        contents = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    with_data = [d for d in blobs if "blob.meta" in toc(blob(out, d["digest"]))]
    assert len(with_data) == (2 if version == "6" else 0)
    expected = ["image", "image/image.boot"] + [f"image/{d['digest'][7:]}.blob.meta" for d in with_data]
    assert list(members) == expected
    assert members["image"].isdir() and members["image"].mode == 0o755
    assert members["image/image.boot"].mode == 0o444
    for d in with_data:
        sections = toc(blob(out, d["digest"]))
        meta = contents[f"image/{d['digest'][7:]}.blob.meta"]
        table = sections["blob.meta"]
        padded = (len(table) + 4095) // 4096 * 4096
        assert meta == table + bytes(padded - len(table)) + sections["blob.meta.header"]
    # blob id == layer digest: the merged bootstrap names its blobs by the layer digests
    (tmp_path / "image.boot").write_bytes(contents["image/image.boot"])
    r = nydusfs("dump", str(tmp_path / "image.boot"), "--json", "--no-chunks")
    ids = [b["blob_id"] for b in json.loads(r.stdout)["blobs"]]
    data_layers = {blobs[0]["digest"][7:], blobs[2]["digest"][7:]}
    assert set(ids) == data_layers
    # a second convert of the same source: the same manifest digest
    r = nydusfs("convert", src, f"oci:{tmp_path / 'again'}:n", "--fs-version", version, "--no-cache",
                "--no-progress", env=env)
    assert r.returncode == 0 and tagged(tmp_path / "again", "n")[0] == digest
