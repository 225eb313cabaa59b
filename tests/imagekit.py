"""Images for the image and convert tests, made with real tools: umoci builds OCI layouts from
layer tars built in code (corpus.Layer), skopeo copies them to docker-archive and Docker media
types. Also the CLI runner and readers of layouts that share no code with nydusfs.image."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

from conftest import require_tool
from corpus import Layer


def need(tool: str) -> None:
    """The project's rule for a missing tool: fail under CI, skip loudly outside."""
    require_tool(tool)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def nydusfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nydusfs", *args], check=False, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def umoci_image(layout: pathlib.Path, tag: str, layers: list[Layer], work: pathlib.Path,
                config: list[str] = ()) -> str:
    """An OCI layout made by umoci, one layer per Layer (umoci gzips them); returns oci:DIR:TAG."""
    need("umoci")
    if not layout.exists():
        run("umoci", "init", "--layout", str(layout))
    image = f"{layout}:{tag}"
    run("umoci", "new", "--image", image)
    work.mkdir(parents=True, exist_ok=True)
    for i, layer in enumerate(layers):
        tar = layer.write(work / f"{tag}-layer{i}.tar")
        run("umoci", "raw", "add-layer", "--image", image, str(tar))
    if config:
        run("umoci", "config", "--image", image, *config)
    return f"oci:{image}"


def skopeo_copy(src: str, dst: str, *extra: str) -> None:
    need("skopeo")
    run("skopeo", "copy", "--quiet", *extra, src, dst)


def skopeo_raw(ref: str) -> dict:
    need("skopeo")
    return json.loads(run("skopeo", "inspect", "--raw", ref).stdout)


def skopeo_digest(ref: str) -> str:
    need("skopeo")
    return json.loads(run("skopeo", "inspect", ref).stdout)["Digest"]


# --- an independent reader of OCI layouts (plain json + hashlib) ------------------------------

def blob(layout: pathlib.Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def tagged(layout: pathlib.Path, tag: str) -> tuple[str, dict]:
    index = json.loads((layout / "index.json").read_text())
    found = [m for m in index["manifests"]
             if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(found) == 1, index
    return found[0]["digest"], json.loads(blob(layout, found[0]["digest"]))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def two_platform_index(layout: pathlib.Path, tag: str, amd64_tag: str, arm64_tag: str) -> str:
    """An OCI index (written by hand, as registries serve them) over two umoci images whose
    configs are set to linux/amd64 and linux/arm64."""
    entries = []
    for t, arch in ((amd64_tag, "amd64"), (arm64_tag, "arm64")):
        run("umoci", "config", "--image", f"{layout}:{t}", "--architecture", arch, "--os", "linux")
        digest, _ = tagged(layout, t)
        size = len(blob(layout, digest))
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                        "size": size, "platform": {"architecture": arch, "os": "linux"}})
    data = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}).encode()
    (layout / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                               "digest": sha256(data), "size": len(data),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    (layout / "index.json").write_text(json.dumps(index))
    return f"oci:{layout}:{tag}"
