"""`nydusfs merge` on the command line: outputs, JSON report, errors, nothing left on failure."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import pytest
from corpus import Layer, pattern
from stacks import build_layers, differences, reference, snapshot_image

from nydusfs.cli import main
from nydusfs.reader import open_image

LAYERS = [Layer().dir("a").file("a/x", pattern(9000, 1)).file("a/y", b"y"),
          Layer().whiteout("a/x").file("b", pattern(100, 2))]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["merge", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_documents_options_and_defaults() -> None:
    text = subprocess.run([sys.executable, "-m", "nydusfs", "merge", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for option in ("--bootstrap", "--parent-bootstrap", "--chunk-dict", "--prefetch-policy",
                   "--prefetch-files", "--blob-digests", "--original-blob-ids", "--blob-sizes",
                   "--output-json", "--whiteout-spec", "(default: none)", "(default: oci)"):
        assert option in text, option


def test_merge_with_json_report(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = build_layers(LAYERS, tmp_path)
    out, report = tmp_path / "image.boot", tmp_path / "out.json"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"/\n/nothing\n")))
    code, stdout, err = run(["--bootstrap", str(out), "--output-json", str(report),
                             "--prefetch-policy", "fs", *map(str, src)], capsys)
    assert code == 0 and stdout == ""
    assert "/nothing" in err and "warning" in err
    doc = json.loads(report.read_text())
    with open_image(out) as image:
        assert doc["fs_version"] == "6" and doc["compressor"] == image.compressor
        # /b (layer 1) is referenced before /a/y (layer 0)
        assert doc["blobs"] == [b.blob_id for b in image.blobs] == [src[1].name, src[0].name]
        assert [b["blob_id"] for b in doc["blob_table"]] == doc["blobs"]
        inodes = {ino for _p, ino in image.walk()}
        assert doc["inode_count"] == len(inodes)
        assert image.prefetch == [image.root_ino]
    assert doc["layers"] == [str(p) for p in src]
    assert {"load", "overlay", "blobs", "write"} <= set(doc["trace"])
    assert not differences(snapshot_image(out, [tmp_path / "layers"]), reference(LAYERS))


def test_patterns_from_a_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = build_layers(LAYERS, tmp_path, version=5)
    patterns = tmp_path / "patterns"
    patterns.write_bytes(b"/b\n/a\n")
    out = tmp_path / "image.boot"
    code, _, err = run(["--bootstrap", str(out), "--prefetch-policy", "fs", "--prefetch-files",
                        str(patterns), *map(str, src)], capsys)
    assert code == 0 and err == ""
    with open_image(out) as image:
        assert image.prefetch == [image.resolve("/b"), image.resolve("/a")]


def _leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


@pytest.mark.parametrize("case", ["version", "missing", "directory", "digest", "count", "dict"])
def test_errors_exit_2_without_traceback_or_output(tmp_path: pathlib.Path, case: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    v6 = build_layers(LAYERS, tmp_path / "six")
    v5 = build_layers(LAYERS, tmp_path / "five", version=5)
    out = tmp_path / "image.boot"
    args = {
        "version": [str(v6[0]), str(v5[1])],
        "missing": [str(v6[0]), str(tmp_path / "no-such-layer")],
        "directory": [str(v6[0]), str(tmp_path)],
        "digest": ["--blob-digests", "abc,def", str(v6[0]), str(v6[1])],
        "count": ["--original-blob-ids", "a,b,c", str(v6[0]), str(v6[1])],
        "dict": ["--chunk-dict", f"blob={v6[0]}", str(v6[0])],
    }[case]
    code, stdout, err = run(["--bootstrap", str(out), "--output-json", str(tmp_path / "j"), *args], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("nydusfs merge: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "j").exists()
    assert _leftovers(tmp_path) == []


def test_existing_output_is_kept_on_failure(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    v6 = build_layers(LAYERS, tmp_path / "six")
    v5 = build_layers(LAYERS, tmp_path / "five", version=5)
    out = tmp_path / "image.boot"
    out.write_bytes(b"previous")
    code, _, _ = run(["--bootstrap", str(out), str(v6[0]), str(v5[0])], capsys)
    assert code == 2 and out.read_bytes() == b"previous"


def test_output_equal_to_an_input_is_a_usage_error(tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = build_layers(LAYERS, tmp_path)
    boot = tmp_path / "merged"
    assert run(["--bootstrap", str(boot), str(src[0])], capsys)[0] == 0
    before = boot.read_bytes()
    code, _, err = run(["--bootstrap", str(boot), "--parent-bootstrap", str(boot), str(src[1])], capsys)
    assert code == 2 and "is also an input (--parent-bootstrap" in err and len(err.splitlines()) == 1
    code, _, err = run(["--bootstrap", str(src[1]), str(src[0]), str(src[1])], capsys)
    assert code == 2 and "is also an input (SOURCE 2" in err
    assert boot.read_bytes() == before and _leftovers(tmp_path) == []
