"""explore and diff on image references: the built-in sample as an OCI layout, its next
version (one layer more), both converted; OCI and Nydus views of one image must agree."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from nydusfs import sample
from nydusfs.image import open_source
from nydusfs.image.nydus import find


def nydusfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nydusfs", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("images")
    out = {"oci1": sample.write_layout(str(work / "src"), "v1"),
           "oci2": sample.write_layout(str(work / "src"), "v2", version=2),
           "ny1": f"oci:{work / 'nydus'}:v1", "ny2": f"oci:{work / 'nydus'}:v2"}
    for src, dst in (("oci1", "ny1"), ("oci2", "ny2")):
        r = nydusfs("convert", out[src], out[dst], "--no-progress")
        assert r.returncode == 0, r.stderr
    return out


def test_oci_and_nydus_views_of_one_image_agree(images: dict[str, str]) -> None:
    docs = {}
    for key in ("oci1", "ny1"):
        r = nydusfs("explore", images[key], "--json")
        assert r.returncode == 0, r.stderr
        docs[key] = json.loads(r.stdout)
    oci, ny = docs["oci1"], docs["ny1"]
    assert [layer["changes"] for layer in oci["layers"]] == [layer["changes"] for layer in ny["layers"]]
    assert [layer["created_by"] for layer in oci["layers"]] == ["sample layer base", "sample layer update",
                                                               "sample layer app"]
    assert oci["summary"]["wasted_bytes"] == ny["summary"]["wasted_bytes"] > 0
    assert all(layer["source_size"] for layer in oci["layers"])
    assert all(layer["nydus_size"] for layer in ny["layers"])
    assert ny["summary"]["chunk_dedup"]["ratio"] > 1.0    # the app layer repeats a lower library


def test_diff_of_two_versions_is_exactly_the_update(images: dict[str, str]) -> None:
    r = nydusfs("diff", images["ny1"], images["ny2"], "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert {(c["path"], c["status"], tuple(c["fields"])) for c in doc["changes"]} == {
        ("/dev/pipe", "removed", ()), ("/etc/config.toml", "changed", ("content",)),
        ("/opt/app/module_200.py", "added", ())}
    # the same answer from the OCI sources (contents by bytes, not chunks)
    r = nydusfs("diff", images["oci1"], images["oci2"], "--json")
    assert {(c["path"], c["status"]) for c in json.loads(r.stdout)["changes"]} == {
        ("/dev/pipe", "removed"), ("/etc/config.toml", "changed"), ("/opt/app/module_200.py", "added")}
    # update cost: only the new layer's blob is fetched, all of it; its bytes from the bootstrap
    cost = doc["update_cost"]
    fetched = [b for b in cost["blobs"] if b["fetch_bytes"]]
    assert len(fetched) == 1 and fetched[0]["present_bytes"] == 0
    dump = nydusfs("dump", images["ny2"], "--json", "--path", "/opt/app/module_200.py")
    assert dump.returncode == 0, dump.stderr
    chunks = json.loads(dump.stdout)["chunks"]
    assert chunks and {c["blob_id"] for c in chunks} == {fetched[0]["blob"]}
    # and that blob is the new (fourth) data layer of v2's manifest
    with open_source(images["ny2"]) as source:
        layers = find(source).blob_layers
    assert len(layers) == 4 and fetched[0]["blob"] == layers[-1].hex
    assert cost["fetch_bytes"] == fetched[0]["bytes"] + cost["bootstrap"]["fetch_bytes"]


def test_oci_source_and_its_conversion_are_equal(images: dict[str, str]) -> None:
    r = nydusfs("diff", images["oci1"], images["ny1"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_reference_is_one_line(tmp_path: pathlib.Path) -> None:
    r = nydusfs("explore", f"oci:{tmp_path / 'nothing'}:v1", "--report")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
