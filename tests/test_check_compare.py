"""The comparison engine against images written directly (Tree + bootstrap writer + a blob).

`Spec` records each entry twice: into a layer tar (the expected side) and into a nydusfs Tree
written as a RAFS v5/v6 bootstrap with an uncompressed blob (the found side). Corrupting the
Tree before writing must show up as exactly the matching difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat

import pytest

import corpus
from corpus import MTIME, Layer
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6
from nydusfs.check import CheckOptions, run_check
from nydusfs.check.compare import Difference
from nydusfs.cli import main
from nydusfs.format.blob import digest
from nydusfs.format.v5 import ChunkInfo
from nydusfs.tree.node import BlobDesc, Node, Tree, new_dir, split_path

CHUNK = 0x10000


class Spec:
    """Entries written to both a layer tar and an image tree."""

    def __init__(self) -> None:
        self.layer = Layer()
        self.root = new_dir(0o755, mtime=MTIME)
        self.root.implicit = True
        self.data: dict[int, bytes] = {}

    def _parent(self, path: bytes) -> Node:
        node = self.root
        for part in split_path(path)[:-1]:
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = new_dir(0o755)
                child.implicit = True
            node = child
        return node

    def _put(self, path: str | bytes, node: Node) -> Node:
        raw = os.fsencode(path)
        parent = self._parent(raw)
        assert parent.children is not None
        old = parent.children.get(split_path(raw)[-1])
        if node.is_dir and old is not None and old.is_dir:
            node.children = old.children
        parent.children[split_path(raw)[-1]] = node
        return node

    def node(self, path: str | bytes) -> Node:
        parent = self._parent(os.fsencode(path))
        assert parent.children is not None
        return parent.children[split_path(os.fsencode(path))[-1]]

    def dir(self, path, mode=0o755, uid=0, gid=0, mtime=MTIME, nsec=0, xattrs=None) -> "Spec":
        self.layer.dir(path, mode, uid, gid, f"{mtime}.{nsec:09d}", xattrs)
        self._put(path, new_dir(mode, uid=uid, gid=gid, mtime=mtime, mtime_nsec=nsec,
                                xattrs=dict(xattrs or {})))
        return self

    def file(self, path, data=b"", mode=0o644, uid=0, gid=0, mtime=MTIME, nsec=0, xattrs=None) -> "Spec":
        self.layer.file(path, data, mode, uid, gid, f"{mtime}.{nsec:09d}", xattrs)
        n = self._put(path, Node(mode=stat.S_IFREG | mode, uid=uid, gid=gid, mtime=mtime,
                                 mtime_nsec=nsec, size=len(data), xattrs=dict(xattrs or {})))
        self.data[id(n)] = data
        return self

    def symlink(self, path, target, uid=0, gid=0) -> "Spec":
        self.layer.symlink(path, target, uid=uid, gid=gid)
        self._put(path, Node(mode=stat.S_IFLNK | 0o777, uid=uid, gid=gid, mtime=MTIME,
                             symlink=os.fsencode(target)))
        return self

    def hardlink(self, path, target) -> "Spec":
        self.layer.hardlink(path, target)
        self._put(path, self.node(target))
        return self

    def char(self, path, major, minor) -> "Spec":
        self.layer.char(path, major, minor)
        self._put(path, Node(mode=stat.S_IFCHR | 0o644, mtime=MTIME, rdev=os.makedev(major, minor)))
        return self

    def fifo(self, path) -> "Spec":
        self.layer.fifo(path)
        self._put(path, Node(mode=stat.S_IFIFO | 0o644, mtime=MTIME))
        return self

    def write_layer(self, path: pathlib.Path) -> str:
        return str(self.layer.write(path, "gzip"))

    def write_image(self, tmp: pathlib.Path, version: int, data: dict[int, bytes] | None = None) -> tuple[str, str]:
        """Bootstrap path and blob directory; `data` overrides file contents in the blob only."""
        data = {**self.data, **(data or {})}
        blob = bytearray()
        index = 0
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            node = stack.pop()
            for _name, child in sorted((node.children or {}).items()):
                if child.is_dir:
                    stack.append(child)
                elif child.is_reg and id(child) not in seen:
                    seen.add(id(child))
                    content = data[id(child)]
                    child.chunks = []
                    for off in range(0, len(content), CHUNK):
                        piece = content[off:off + CHUNK]
                        blob += bytes(-len(blob) % 4096)
                        child.chunks.append(ChunkInfo(
                            digest(self.data[id(child)][off:off + CHUNK], "blake3"), 0, 0,
                            len(piece), len(piece), len(blob), len(blob), off, index, 0))
                        blob += piece
                        index += 1
        blob_id = hashlib.sha256(blob).hexdigest()
        tree = Tree(root=self.root, version=version, compressor="none", digester="blake3",
                    chunk_size=CHUNK,
                    blobs=[BlobDesc(blob_id=blob_id, compressor="none", chunk_size=CHUNK,
                                    chunk_count=index, compressed_size=len(blob),
                                    uncompressed_size=len(blob))] if index else [])
        boot, _ = (write_v5 if version == 5 else write_v6)(tree)
        blobs = tmp / "blobs"
        blobs.mkdir(exist_ok=True)
        if index:
            (blobs / blob_id).write_bytes(bytes(blob))
        out = tmp / f"image.v{version}.boot"
        out.write_bytes(boot)
        return str(out), str(blobs)


def sample() -> Spec:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    return (Spec().dir("d", mode=0o750, uid=3, gid=4, nsec=123456789)
            .file("d/text", b"hello\n" * 1000, mode=0o640, uid=1000, gid=1000)
            .file("d/multi", corpus.pattern(3 * CHUNK + 5, 7), nsec=1)
            .file("d/empty")
            .file("d/suid", b"s", mode=0o4755)
            .file("cap", b"c", xattrs={b"security.capability": cap, b"user.bin": b"\x00\xff"})
            .dir("x", xattrs={b"user.dir": b"1"})
            .file("l/target", b"shared").hardlink("l/h1", "l/target").hardlink("l/h2", "l/target")
            .symlink("l/sym", "target").symlink("l/dangling", "/nowhere")
            .char("dev/null", 1, 3).char("dev/big", 300, 70000).fifo("dev/pipe")
            .file(b"n\xff/\xe9", b"bytes name"))


def check(tmp: pathlib.Path, spec: Spec, version: int, data: dict[int, bytes] | None = None,
          **kw) -> list[Difference]:
    layer = spec.write_layer(tmp / "layer.tar.gz")
    boot, blobs = spec.write_image(tmp, version, data)
    return run_check(CheckOptions(bootstrap=boot, layers=[layer], blob_dirs=[blobs], **kw)).differences


def fields(diffs: list[Difference]) -> set[tuple[bytes, str]]:
    return {(d.path, d.field) for d in diffs}


@pytest.fixture(params=[5, 6])
def version(request) -> int:
    return request.param


def test_equal_image_checks_clean(tmp_path, version):
    assert check(tmp_path, sample(), version) == []


def test_each_attribute_change_is_reported_exactly(tmp_path, version):
    s = sample()
    s.node("d/text").mode = stat.S_IFREG | 0o600
    s.node("d/suid").mode = stat.S_IFREG | 0o755              # setuid bit lost
    s.node("d").uid = 0
    s.node("d/multi").gid = 9
    s.node("cap").mtime += 1
    s.node("d").mtime_nsec = 123456788
    s.node("cap").xattrs[b"user.bin"] = b"\x00\xfe"
    s.node("x").xattrs[b"user.added"] = b"+"
    s.node("l/sym").symlink = b"tarGet"
    s.node("dev/big").rdev = os.makedev(300, 70001)
    diffs = check(tmp_path, s, version)
    assert fields(diffs) == {
        (b"/d/text", "mode"), (b"/d/suid", "mode"), (b"/d", "uid"), (b"/d/multi", "gid"),
        (b"/cap", "mtime"), (b"/d", "mtime"), (b"/cap", "xattr"), (b"/x", "xattr"),
        (b"/l/sym", "symlink"), (b"/dev/big", "rdev")}
    by = {(d.path, d.field, d.xattr): d for d in diffs}
    assert (by[b"/d/suid", "mode", None].expected, by[b"/d/suid", "mode", None].found) == ("4755", "0755")
    assert by[b"/d", "mtime", None].expected == "1700000000.123456789"
    assert by[b"/d", "mtime", None].found == "1700000000.123456788"
    x = by[b"/cap", "xattr", b"user.bin"]
    assert (x.expected, x.found) == ("hex:00ff", "hex:00fe")
    assert (by[b"/x", "xattr", b"user.added"].expected, by[b"/x", "xattr", b"user.added"].found) == (None, "+")
    assert (by[b"/dev/big", "rdev", None].expected, by[b"/dev/big", "rdev", None].found) == ("300:70000", "300:70001")


def test_content_flip_is_reported_for_every_name_of_the_inode(tmp_path, version):
    s = sample()
    target = s.node("l/target")
    diffs = check(tmp_path, s, version, data={id(target): b"sharEd"})
    assert fields(diffs) == {(b"/l/target", "content"), (b"/l/h1", "content"), (b"/l/h2", "content")}
    assert diffs[0].expected.startswith("blake3:") and diffs[0].expected != diffs[0].found


def test_missing_extra_and_type(tmp_path, version):
    s = sample()
    d = s.node("d")
    del d.children[b"empty"]
    d.children[b"added"] = Node(mode=stat.S_IFREG | 0o644, mtime=MTIME)
    s.data[id(d.children[b"added"])] = b""
    s.node("dev").children[b"pipe"] = new_dir(0o644, mtime=MTIME)
    diffs = check(tmp_path, s, version)
    assert fields(diffs) == {(b"/d/empty", "missing"), (b"/d/added", "extra"), (b"/dev/pipe", "type"),
                             (b"/dev", "nlink")}   # a directory more under /dev


def test_split_hardlink_group(tmp_path, version):
    s = sample()
    old = s.node("l/h2")
    copy = Node(mode=old.mode, mtime=old.mtime, size=old.size)
    s.data[id(copy)] = s.data[id(old)]
    s.node("l").children[b"h2"] = copy
    diffs = check(tmp_path, s, version)
    assert fields(diffs) == {(p, f) for p in (b"/l/target", b"/l/h1", b"/l/h2") for f in ("nlink", "hardlink")}
    h2 = next(d for d in diffs if d.path == b"/l/h2" and d.field == "hardlink")
    assert (h2.expected, h2.found) == (["/l/h1", "/l/target"], [])


def test_ignore_precision_and_no_content(tmp_path, version):
    s = sample()
    s.node("d/text").uid = 5
    s.node("d").mtime_nsec = 999            # .000000999 against .123456789: differs in us
    s.node("cap").mtime_nsec = 5            # differs below a microsecond only
    target = s.node("l/target")
    flipped = {id(target): b"SHARED"}
    assert fields(check(tmp_path, s, version, data=flipped, ignore=["uid"], mtime_precision="us",
                        content=False)) == {(b"/d", "mtime")}
    assert fields(check(tmp_path, s, version, data=flipped, ignore=["uid", "mtime", "content"])) == set()
    assert fields(check(tmp_path, s, version, data=flipped, ignore=["xattr:user.nothing"],
                        mtime_precision="s")) == {(b"/d/text", "uid")} | {
        (p, "content") for p in (b"/l/target", b"/l/h1", b"/l/h2")}


def test_unreadable_blob_is_a_content_difference(tmp_path, version):
    s = sample()
    layer = s.write_layer(tmp_path / "layer.tar.gz")
    boot, blobs = s.write_image(tmp_path, version)
    for f in pathlib.Path(blobs).iterdir():
        f.write_bytes(f.read_bytes()[:4096])  # cut short: chunks past it cannot be read
    diffs = run_check(CheckOptions(bootstrap=boot, layers=[layer], blob_dirs=[blobs])).differences
    assert diffs and {d.field for d in diffs} == {"content"}
    assert all(d.found.startswith("unreadable: blob") for d in diffs)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    s = sample()
    s.node("d/text").gid = 77
    layer = s.write_layer(tmp_path / "layer.tar.gz")
    boot, blobs = s.write_image(tmp_path, 6)
    out = tmp_path / "diff.json"
    assert main(["check", boot, "--blob-dir", blobs, "--layers", layer, "--json", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert doc["equal"] is False and doc["counts"] == {"gid": 1}
    assert doc["differences"] == [{"path": "/d/text", "field": "gid", "expected": 1000, "found": 77}]
    table = capsys.readouterr().out
    assert "gid" in table and "/d/text" in table and "1 difference" in table
    assert main(["check", boot, "--blob-dir", blobs, "--layers", layer, "--ignore", "gid"]) == 0
    assert "equal" in capsys.readouterr().out
    assert main(["check", boot, "--blob-dir", blobs, "--layers", layer, "--json", "-"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["counts"] == {"gid": 1} and "gid" in captured.err
    # bad input: exit 2 with a message naming the problem
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x01" * 1024)
    assert main(["check", boot, "--blob-dir", blobs, "--layers", str(bad)]) == 2
    assert "bad.tar" in capsys.readouterr().err
    assert main(["check", boot, "--layers", layer, "--ignore", "colour"]) == 2
    assert "--ignore 'colour'" in capsys.readouterr().err


def test_non_utf8_paths_survive_json(tmp_path):
    s = sample()
    del s.node(b"n\xff").children[b"\xe9"]
    layer = s.write_layer(tmp_path / "layer.tar.gz")
    boot, blobs = s.write_image(tmp_path, 5)
    out = tmp_path / "d.json"
    assert main(["check", boot, "--blob-dir", blobs, "--layers", layer, "--json", str(out)]) == 1
    (d,) = json.loads(out.read_text())["differences"]
    assert os.fsencode(d["path"]) == b"/n\xff/\xe9" and d["field"] == "missing"


def test_check_core_imports_neither_rich_nor_fuse():
    import subprocess
    import sys

    code = ("import sys, nydusfs.check, nydusfs.check.sides, nydusfs.check.mount; "
            "print(sorted(m for m in ('rich', 'pyfuse3', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_directory_order_that_breaks_lookups_is_an_entry_difference(tmp_path, version):
    from nydusfs.check.sides import walk_image
    from nydusfs.reader import open_image

    boot, blobs = sample().write_image(tmp_path, version)
    with open_image(boot, [blobs]) as image:
        l_ino = image.resolve("/l")
        real = image.list_dir

        def shuffled(ino: int):
            kids = real(ino)
            return tuple(reversed(kids)) if ino == l_ino else kids

        image.list_dir = shuffled  # as an unsorted directory on disk would list
        try:
            _, problems = walk_image(image, None)
        finally:
            image.list_dir = real
    assert [(d.path, d.field) for d in problems] == [(b"/l", "entries")]
    assert problems[0].found[0] == "'target' before 'sym'"


def test_bad_json_destination_and_blob_dir_fail_early(tmp_path, capsys):
    s = sample()
    layer = s.write_layer(tmp_path / "layer.tar.gz")
    boot, blobs = s.write_image(tmp_path, 6)
    assert main(["check", boot, "--layers", layer, "--blob-dir", str(tmp_path / "nope")]) == 2
    assert "--blob-dir" in capsys.readouterr().err
    assert main(["check", boot, "--layers", layer, "--blob-dir", blobs,
                 "--json", str(tmp_path / "no" / "dir.json")]) == 2
    assert "--json" in capsys.readouterr().err
    report = tmp_path / "r.json"
    assert main(["check", boot, "--layers", str(tmp_path / "missing.tar"), "--json", str(report)]) == 2
    assert not report.exists()
