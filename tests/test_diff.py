"""nydusfs diff: changes between two images and the update cost, on images built so that the
answers are known; the CLI's exit codes, JSON and terminal safety."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from corpus import Layer, pattern
from stacks import build_layers

from nydusfs.explore.diff import ADDED, CHANGED, REMOVED, diff, oci_side
from nydusfs.explore.inputs import load_side
from nydusfs.reader import open_image

CHUNK = 0x1000


def nydusfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nydusfs", *args], capture_output=True, text=True,
                          timeout=120)


def _versions() -> tuple[Layer, Layer]:
    shared = pattern(5 * CHUNK, 11)
    old = (Layer().dir("etc").file("etc/conf", b"a=1\n").file("lib", shared)
           .dir("gone").file("gone/x", b"x").file("same", b"same").symlink("ln", "same"))
    new = (Layer().dir("etc").file("etc/conf", b"a=2\n").file("lib", shared[:-CHUNK] + pattern(CHUNK, 12))
           .file("same", b"same", mode=0o600).symlink("ln", "lib").file("added", pattern(2 * CHUNK, 13)))
    return old, new


def test_oci_changes_are_exactly_what_was_done(tmp_path: pathlib.Path) -> None:
    old, new = _versions()
    a = oci_side("old", [str(old.write(tmp_path / "old.tar"))])
    b = oci_side("new", [str(new.write(tmp_path / "new.tar"))])
    result = diff(a, b)
    got = {(c.path, c.status): c.fields for c in result.changes}
    assert got == {
        (b"/etc/conf", CHANGED): ("content",),
        (b"/lib", CHANGED): ("content",),
        (b"/gone", REMOVED): (), (b"/gone/x", REMOVED): (),
        (b"/same", CHANGED): ("mode",),
        (b"/ln", CHANGED): ("symlink",),
        (b"/added", ADDED): (),
        (b"/", CHANGED): ("nlink",),
    }
    assert diff(a, a).equal


def test_nydus_update_cost_counts_the_blobs_a_lacks(tmp_path: pathlib.Path) -> None:
    old, new = _versions()
    [fa] = build_layers([old], tmp_path / "a", chunk_size=CHUNK)
    [fb] = build_layers([new], tmp_path / "b", chunk_size=CHUNK)
    a = load_side(str(fa), [], "chunks")
    b = load_side(str(fb), [], "chunks")
    result = diff(a, b)
    assert {(c.path, c.status) for c in result.changes} == {
        (b"/etc/conf", CHANGED), (b"/lib", CHANGED), (b"/gone", REMOVED), (b"/gone/x", REMOVED),
        (b"/same", CHANGED), (b"/ln", CHANGED), (b"/added", ADDED), (b"/", CHANGED)}
    assert result.cost is not None and len(result.cost) == 1
    cost = result.cost[0]
    # B's distinct chunk ranges in its one blob, and which digests A has, from the bootstraps
    with open_image(fa) as ia, open_image(fb) as ib:
        held = {c.block_id for _, ino in ia.walk() if ia.inode(ino).is_reg for c in ia.chunks(ino)}
        mine = {(c.compressed_offset, c.compressed_size): c.block_id for _, ino in ib.walk()
                if ib.inode(ino).is_reg for c in ib.chunks(ino)}
        assert cost.blob == ib.blobs[0].blob_id != ia.blobs[0].blob_id
    assert cost.chunks == len(mine)
    assert cost.bytes == sum(size for _, size in mine)
    # A does not have B's blob: every range is fetched, those whose digest A has as well
    assert cost.present_bytes == 0 and cost.fetch_bytes == cost.bytes
    assert cost.same_digest_bytes == sum(size for (_, size), d in mine.items() if d in held)
    # lib keeps 4 of its 5 chunks and "same" keeps its one: 5 in A; conf, lib's last, added x2 new
    assert len([d for d in mine.values() if d in held]) == 5
    assert len([d for d in mine.values() if d not in held]) == 4
    # a node holding B itself fetches nothing
    [again] = diff(b, b).cost or []
    assert again.present_bytes == again.bytes and again.fetch_bytes == 0


def test_cli_exit_codes_json_and_mixed_kinds(tmp_path: pathlib.Path) -> None:
    old, new = _versions()
    ta, tb = old.write(tmp_path / "old.tar"), new.write(tmp_path / "new.tar")
    [fa] = build_layers([old], tmp_path / "a", chunk_size=CHUNK)
    assert nydusfs("diff", str(ta), str(ta)).returncode == 0
    # an OCI layer and its Nydus conversion hold the same tree: compared by content bytes
    same = nydusfs("diff", str(ta), str(fa), "--ignore", "mtime")
    assert same.returncode == 0, same.stdout + same.stderr
    r = nydusfs("diff", str(ta), str(tb), "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"added": 1, "removed": 2, "changed": 5}
    assert "update_cost" not in doc
    bad = nydusfs("diff", str(ta), str(tmp_path / "missing.tar"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


def test_names_are_escaped_on_the_terminal_and_exact_in_json(tmp_path: pathlib.Path) -> None:
    evil = "x\x1b]0;pwned\x07\x1b[2J[bold]y"
    ta = Layer().file("keep", b"k").write(tmp_path / "a.tar")
    tb = Layer().file("keep", b"k").file(evil, b"e").write(tmp_path / "b.tar")
    r = nydusfs("diff", str(ta), str(tb))
    assert r.returncode == 1
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J[bold]y" in r.stdout
    doc = json.loads(nydusfs("diff", str(ta), str(tb), "--json").stdout)
    assert [c["path"] for c in doc["changes"] if c["status"] == "added"] == ["/" + evil]
