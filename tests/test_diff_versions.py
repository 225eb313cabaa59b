"""diff of two versions of one image, built the way tools/make-images builds realistic and
realistic-v2 (umoci unpack, change the root filesystem, umoci repack, so version 2 is version 1's
layers plus one): a package installed (its files and dpkg's records), one file changed, one
directory deleted. The changes are known by construction; diff must report exactly them, for
the OCI images and for their Nydus conversions, and charge an update only for the new layer."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from conftest import require_tool

STATUS = b"Package: base\nStatus: install ok installed\nVersion: 1\n\n"
PACKAGE = {  # what installing the package `tree` writes, as dpkg would
    "usr/bin/tree": b"\x7fELF tree binary\n" * 300,
    "usr/share/doc/tree/copyright": b"GPL-2\n",
    "usr/share/man/man1/tree.1.gz": b"\x1f\x8b man page\n",
    "var/lib/dpkg/info/tree.list": b"/usr/bin/tree\n/usr/share/doc/tree/copyright\n",
}
NEW_DIRS = ["usr/share/doc/tree", "usr/share/man", "usr/share/man/man1"]
CHANGED = "opt/app/src/app.py"
DELETED = "usr/share/doc/app"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=300)


def nydusfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nydusfs", *args], capture_output=True, text=True,
                          timeout=300)


def _base(root: pathlib.Path) -> None:
    for d in ("etc", "usr/bin", "usr/share/doc/app", "opt/app/src", "var/lib/dpkg/info"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text("ID=test\n")
    (root / "usr/bin/sh").write_bytes(b"\x7fELF sh\n" * 500)
    (root / "usr/share/doc/app/README").write_text("the application\n")
    (root / "usr/share/doc/app/NEWS").write_text("version 1\n")
    (root / CHANGED).write_text("print('hello')\n")
    (root / "var/lib/dpkg/status").write_bytes(STATUS)


def _v2(root: pathlib.Path) -> None:
    """The package, the edit and the deletion; directories keep their times (only what the
    three changes are about may differ)."""
    dirs = [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()] + [root]
    times = {p: p.stat().st_mtime_ns for p in dirs}
    for d in NEW_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for path, data in PACKAGE.items():
        (root / path).write_bytes(data)
    with open(root / "var/lib/dpkg/status", "ab") as f:
        f.write(b"Package: tree\nStatus: install ok installed\nVersion: 2.1.0-1\n\n")
    (root / CHANGED).write_text("print('hello')\nprint('version 2')\n")
    for p in (root / CHANGED, root / "var/lib/dpkg/status"):   # written later than version 1
        t = p.stat().st_mtime_ns + 100 * 10**9
        os.utime(p, ns=(t, t))
    for p in sorted((root / DELETED).iterdir()):
        p.unlink()
    (root / DELETED).rmdir()
    for p, t in times.items():
        if p.exists():
            os.utime(p, ns=(t, t))


def _versions(tmp: pathlib.Path) -> pathlib.Path:
    """oci layout with tags v1 (one layer) and v2 (v1's layer and one more)."""
    require_tool("umoci")
    oci, bundle = tmp / "oci", tmp / "bundle"
    run("umoci", "init", "--layout", str(oci))
    run("umoci", "new", "--image", f"{oci}:empty")
    run("umoci", "unpack", "--image", f"{oci}:empty", str(bundle))
    _base(bundle / "rootfs")
    run("umoci", "repack", "--image", f"{oci}:v1", str(bundle))
    run("rm", "-rf", str(bundle))
    run("umoci", "unpack", "--image", f"{oci}:v1", str(bundle))
    _v2(bundle / "rootfs")
    run("umoci", "repack", "--image", f"{oci}:v2", str(bundle))
    return oci


def _expected() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for p in [*PACKAGE, *NEW_DIRS]:
        out[("/" + p, "added")] = set()
    for p in (DELETED, DELETED + "/README", DELETED + "/NEWS"):
        out[("/" + p, "removed")] = set()
    out[("/" + CHANGED, "changed")] = {"size", "content", "mtime"}
    out[("/var/lib/dpkg/status", "changed")] = {"size", "content", "mtime"}
    out[("/usr/share", "changed")] = {"nlink"}          # one subdirectory more (man)
    return out


def _changes(doc: dict) -> dict[tuple[str, str], set[str]]:
    return {(c["path"], c["status"]): set(c["fields"]) for c in doc["changes"]}


def test_diff_of_two_versions_reports_exactly_the_three_changes(tmp_path: pathlib.Path) -> None:
    oci = _versions(tmp_path)
    r = nydusfs("diff", "--json", f"oci:{oci}:v1", f"oci:{oci}:v2")
    assert r.returncode == 1, r.stderr
    assert _changes(json.loads(r.stdout)) == _expected()

    # the Nydus conversions: the same changes, compared by chunk digests; the update fetches
    # the new layer's blob only (and the new bootstrap layer)
    nydus = tmp_path / "nydus"
    for tag in ("v1", "v2"):
        c = nydusfs("convert", "--no-progress", "--chunk-size", "0x1000", f"oci:{oci}:{tag}", f"oci:{nydus}:{tag}")
        assert c.returncode == 0, c.stderr
    r = nydusfs("diff", "--json", f"oci:{nydus}:v1", f"oci:{nydus}:v2")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert _changes(doc) == _expected()
    blobs = {b["blob"]: b for b in doc["update_cost"]["blobs"]}
    manifest = _manifest(nydus, "v1")
    old_blobs = {d["digest"].split(":", 1)[1] for d in manifest["layers"]}
    shared = [b for name, b in blobs.items() if name in old_blobs]
    new = [b for name, b in blobs.items() if name not in old_blobs]
    assert shared and all(b["fetch_bytes"] == 0 for b in shared)
    assert len(new) == 1 and new[0]["fetch_bytes"] > 0
    boot = _manifest(nydus, "v2")["layers"][-1]       # v2's bootstrap layer, fetched whole
    assert doc["update_cost"]["bootstrap"] == {"layer": boot["digest"], "bytes": boot["size"],
                                               "present_bytes": 0, "fetch_bytes": boot["size"]}
    assert doc["update_cost"]["fetch_bytes"] == new[0]["fetch_bytes"] + boot["size"]
    assert new[0]["present_bytes"] + new[0]["fetch_bytes"] == new[0]["bytes"]


def _manifest(layout: pathlib.Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    algo, hexd = desc["digest"].split(":", 1)
    return json.loads((layout / "blobs" / algo / hexd).read_text())
