"""`nydusfs check` on images built by `nydusfs create` + `nydusfs merge`: the edge-case corpus
checks clean (directly and through the FUSE mount), each deliberate corruption is reported as
exactly that difference with exit status 1, and the manifest rule holds."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import tempfile

import pytest

import corpus
from conftest import needs_fuse
from corpus import MTIME, Layer, pattern
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6
from nydusfs.check import CheckOptions, run_check
from nydusfs.check.compare import Difference
from nydusfs.cli import main
from nydusfs.reader import open_image
from nydusfs.tree.load import load_tree
from nydusfs.tree.node import Node, Tree

CHUNK = 0x10000


def build(tmp: pathlib.Path, layers: list[Layer], version: int = 6, name: str = "image",
          compression: str = "gzip") -> tuple[str, str, list[str]]:
    """Layer tars -> Nydus layer files named by their sha256 in one directory (the blob dir of
    the merged image) -> merged bootstrap. Returns (bootstrap, blob dir, layer tar paths)."""
    work = tmp / name
    blobs = work / "layers"
    blobs.mkdir(parents=True)
    tars, files = [], []
    for i, layer in enumerate(layers):
        tar = layer.write(work / f"layer{i}.tar.gz", compression)
        out = work / f"layer{i}.nydus"
        assert main(["create", str(tar), "-o", str(out), "--fs-version", str(version),
                     "--chunk-size", hex(CHUNK)]) == 0
        final = blobs / hashlib.sha256(out.read_bytes()).hexdigest()
        out.rename(final)
        tars.append(str(tar))
        files.append(str(final))
    boot = work / "merged.boot"
    assert main(["merge", *files, "--bootstrap", str(boot)]) == 0
    return str(boot), str(blobs), tars


def check(boot: str, blobs: str, tars: list[str], **kw) -> list[Difference]:
    return run_check(CheckOptions(bootstrap=boot, layers=tars, blob_dirs=[blobs], **kw)).differences


def exact(diffs: list[Difference]) -> set[tuple[bytes, str]]:
    return {(d.path, d.field) for d in diffs}


# --- a stack with deletions, type changes, links across layers -----------------------------------

def stack(links_and_implied: bool = True) -> list[Layer]:
    """Three layers; `links_and_implied` adds the two cases with dedicated image tests below (a
    hard link to a lower layer's file, a directory an upper layer only implies), so that a
    problem there fails those tests only."""
    base = (Layer().dir("etc").file("etc/conf", b"v1").file("etc/old", b"old").dir("etc/sub")
            .file("etc/sub/a", b"a")
            .dir("usr").dir("usr/lib").file("usr/lib/lib.so", pattern(200_000, 5), mode=0o755)
            .hardlink("usr/lib/lib.so.1", "usr/lib/lib.so").hardlink("usr/lib/lib.so.2", "usr/lib/lib.so")
            .symlink("usr/lib/link", "lib.so")
            .dir("var", xattrs={b"user.v": b"1"}).dir("var/log").file("var/log/a.log", b"log")
            .dir("var/cache").file("var/cache/x", b"x")
            .dir("dev").char("dev/null", 1, 3).fifo("dev/p")
            .dir("bin").file("bin/suid", b"s", mode=0o4755)
            .file("opt/implied/file", b"f", mtime="1700000000.5"))
    middle = (Layer().dir("etc").whiteout("etc/old").file("etc/conf", b"v2", mode=0o600)
              .whiteout("etc/sub").file("etc/sub", b"dir became a file")
              .dir("usr/lib").file("usr/lib/lib.so", b"new lib", mode=0o755).whiteout("usr/lib/link")
              .dir("var", mode=0o700).dir("var/cache").opaque("var/cache").file("var/cache/new", b"n")
              .file("opt/implied/file2", b"g"))
    top = (Layer().dir("etc", mode=0o750, mtime="1700000001.123456789")
           .opaque("var").file("var/fresh", b"fresh")
           .symlink("bin/suid", "/usr/lib/lib.so").whiteout("dev/p"))
    if links_and_implied:
        base.dir("srv", mode=0o750, uid=5, gid=6, mtime="1600000000.25", xattrs={b"user.s": b"1"})
        middle.file("srv/data", b"implies srv")
        top.hardlink("bin/again", "usr/lib/lib.so.1")
    return [base, middle, top]


EXPECTED_PATHS = {
    b"/", b"/etc", b"/etc/conf", b"/etc/sub", b"/usr", b"/usr/lib", b"/usr/lib/lib.so",
    b"/usr/lib/lib.so.1", b"/usr/lib/lib.so.2", b"/var", b"/var/fresh", b"/dev", b"/dev/null",
    b"/bin", b"/bin/suid", b"/bin/again", b"/opt", b"/opt/implied", b"/opt/implied/file",
    b"/opt/implied/file2", b"/srv", b"/srv/data"}


def test_reference_of_the_stack_is_what_the_spec_says(tmp_path):
    from nydusfs.check import reference_entries

    tars = [str(layer.write(tmp_path / f"l{i}.tar")) for i, layer in enumerate(stack())]
    ref = reference_entries(tars)
    assert set(ref) == EXPECTED_PATHS
    assert ref[b"/bin/again"].link == ref[b"/usr/lib/lib.so.1"].link and ref[b"/bin/again"].nlink == 3
    assert ref[b"/usr/lib/lib.so"].nlink == 1 and ref[b"/etc/sub"].kind == "file"
    assert (ref[b"/var"].mode, ref[b"/var"].xattrs) == (0o700, {})
    srv = ref[b"/srv"]   # only implied by the middle layer: keeps the base layer's metadata
    assert (srv.mode, srv.uid, srv.gid, srv.mtime_ns, srv.xattrs) == \
        (0o750, 5, 6, 1_600_000_000_250_000_000, {b"user.s": b"1"})


@pytest.mark.parametrize("version", [5, 6])
def test_stack_checks_clean(tmp_path, version):
    boot, blobs, tars = build(tmp_path, stack(links_and_implied=False), version)
    assert check(boot, blobs, tars) == []


@pytest.mark.parametrize("version", [5, 6])
def test_full_stack_checks_clean(tmp_path, version):
    boot, blobs, tars = build(tmp_path, stack(), version)
    assert check(boot, blobs, tars) == []


@pytest.mark.parametrize("version", [5, 6])
def test_hardlink_to_a_lower_layer_file_checks_clean(tmp_path, version):
    low = Layer().dir("usr").file("usr/lib.so", b"library", mode=0o755).hardlink("usr/lib.so.1", "usr/lib.so")
    up = Layer().dir("bin").hardlink("bin/again", "usr/lib.so.1")
    boot, blobs, tars = build(tmp_path, [low, up], version)
    assert check(boot, blobs, tars) == []


@pytest.mark.parametrize("version", [5, 6])
def test_implied_directory_keeps_lower_metadata_checks_clean(tmp_path, version):
    low = Layer().dir("srv", mode=0o750, uid=5, gid=6, mtime="1600000000.25", xattrs={b"user.s": b"1"})
    up = Layer().file("srv/data", b"implies srv")
    boot, blobs, tars = build(tmp_path, [low, up], version)
    assert check(boot, blobs, tars) == []


# --- the edge-case corpus ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(corpus.EDGE_CASES))
def test_each_edge_case_checks_clean(tmp_path, name):
    boot, blobs, tars = build(tmp_path, [corpus.EDGE_CASES[name]()])
    assert check(boot, blobs, tars) == []


@pytest.mark.parametrize("version", [5, 6])
def test_corpus_as_one_stack_checks_clean(tmp_path, version):
    layers = [f() for _, f in sorted(corpus.EDGE_CASES.items())] + [corpus.everything()]
    boot, blobs, tars = build(tmp_path, layers, version, compression="zstd")
    assert check(boot, blobs, tars) == []


MOUNTED_CASES = [(5, "stack"), (6, "stack"), (5, "corpus"), (6, "corpus")]


def _layers(which: str) -> list[Layer]:
    return stack(links_and_implied=False) + [corpus.everything()] if which == "stack" else \
        [f() for _, f in sorted(corpus.EDGE_CASES.items())]


@needs_fuse
@pytest.mark.parametrize("version,which", MOUNTED_CASES)
def test_through_mount_checks_clean(tmp_path, version, which, monkeypatch):
    boot, blobs, tars = build(tmp_path, _layers(which), version)
    scratch = tmp_path / "scratch"      # the mountpoint goes here: other runs on the machine
    scratch.mkdir()                     # may have their own nydusfs-check- mounts meanwhile
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = run_check(CheckOptions(bootstrap=boot, layers=tars, blob_dirs=[blobs], through_mount=True))
    assert result.differences == [] and result.target == "mount"
    assert result.found_paths == result.expected_paths > 40
    leftovers = [e for e in open("/proc/self/mountinfo").read().splitlines() if str(scratch) in e]
    assert leftovers == [] and list(scratch.iterdir()) == []


@needs_fuse
def test_through_mount_sees_a_flipped_blob_byte(tmp_path):
    boot, blobs, tars = build(tmp_path, [corpus.regular_files()])
    paths = flip_chunk_of(boot, blobs, b"/d/text")
    diffs = run_check(CheckOptions(bootstrap=boot, layers=tars, blob_dirs=[blobs],
                                   through_mount=True)).differences
    assert exact(diffs) == {(p, "content") for p in paths}


@needs_fuse
def test_mounted_option_compares_any_mounted_tree(tmp_path):
    from nydusfs.check.mount import mounted

    boot, blobs, tars = build(tmp_path, [corpus.everything()])
    bad = rewrite(boot, blobs, _uid_of_text)
    with mounted(boot, [blobs]) as good_mnt, mounted(bad, [blobs]) as bad_mnt:
        assert run_check(CheckOptions(bootstrap=None, layers=tars, mounted=good_mnt)).differences == []
        diffs = run_check(CheckOptions(bootstrap=None, layers=tars, mounted=bad_mnt)).differences
        assert exact(diffs) == {(b"/d/text", "uid")}
        assert main(["check", "--mounted", bad_mnt, "--layers", *tars, "--ignore", "uid"]) == 0
    assert not os.path.exists(good_mnt) and not os.path.exists(bad_mnt)


def _uid_of_text(t: Tree) -> None:
    node(t, "/d/text").uid = 0


# --- corruptions: each reported exactly, exit 1 ---------------------------------------------------

def rewrite(boot: str, blobs: str, edit, out_name: str = "corrupt.boot") -> str:
    """Load the merged bootstrap into a Tree, let `edit` change it, write it back."""
    with open_image(boot, [blobs]) as image:
        tree = load_tree(image)
        version = image.version
    edit(tree)
    data, _ = (write_v5 if version == 5 else write_v6)(tree)
    out = pathlib.Path(boot).with_name(out_name)
    out.write_bytes(data)
    return str(out)


def node(tree: Tree, path: str) -> Node:
    n = tree.lookup(os.fsencode(path))
    assert n is not None, path
    return n


def flip_chunk_of(boot: str, blobs: str, path: bytes) -> set[bytes]:
    """Flip one byte inside the first chunk of `path`; the paths whose content uses it."""
    with open_image(boot, [blobs]) as image:
        chunk = image.chunks(image.resolve(path))[0]
        where = image.blob_store.path_of(chunk.blob_index)
        users = {p for p, ino in image.walk() if image.inode(ino).is_reg and any(
            (c.blob_index, c.compressed_offset) == (chunk.blob_index, chunk.compressed_offset)
            for c in image.chunks(ino))}
    raw = bytearray(pathlib.Path(where).read_bytes())
    raw[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x55
    pathlib.Path(where).write_bytes(bytes(raw))
    return users


def _drop(t: Tree) -> None:
    del node(t, "/etc").children[b"conf"]


def _mode(t: Tree) -> None:
    node(t, "/usr/lib/lib.so").mode = stat.S_IFREG | 0o4755


def _uid(t: Tree) -> None:
    node(t, "/dev/null").uid = 1


def _gid(t: Tree) -> None:
    node(t, "/opt/implied/file").gid = 2


def _mtime(t: Tree) -> None:
    node(t, "/etc").mtime_nsec = 123456780


def _xattr(t: Tree) -> None:
    node(t, "/cap").xattrs[b"security.capability"] = bytes(20)


def _xattr_gone(t: Tree) -> None:
    del node(t, "/user").xattrs[b"user.bin"]


def _symlink(t: Tree) -> None:
    node(t, "/bin/suid").symlink = b"/usr/lib/lib.sO"


def _rdev(t: Tree) -> None:
    node(t, "/dev/null").rdev = os.makedev(1, 5)


def _split(t: Tree) -> None:
    old = node(t, "/usr/lib/lib.so.2")
    node(t, "/usr/lib").children[b"lib.so.2"] = Node(
        mode=old.mode, uid=old.uid, gid=old.gid, mtime=old.mtime, mtime_nsec=old.mtime_nsec,
        size=old.size, chunks=list(old.chunks), layer=old.layer)


def _extra(t: Tree) -> None:
    node(t, "/etc").children[b"intruder"] = Node(mode=stat.S_IFREG | 0o644, mtime=MTIME)


CORRUPTIONS = {
    "drop a file": (_drop, {(b"/etc/conf", "missing")}),
    "change a mode": (_mode, {(b"/usr/lib/lib.so", "mode")}),
    "change a uid": (_uid, {(b"/dev/null", "uid")}),
    "change a gid": (_gid, {(b"/opt/implied/file", "gid")}),
    "change an mtime": (_mtime, {(b"/etc", "mtime")}),
    "change an xattr value": (_xattr, {(b"/cap", "xattr")}),
    "drop an xattr": (_xattr_gone, {(b"/user", "xattr")}),
    "change a symlink target": (_symlink, {(b"/bin/suid", "symlink")}),
    "change an rdev": (_rdev, {(b"/dev/null", "rdev")}),
    "split a hardlink group": (_split, {(p, f) for p in (b"/usr/lib/lib.so.1", b"/usr/lib/lib.so.2")
                                        for f in ("nlink", "hardlink")}),
    "add an extra file": (_extra, {(b"/etc/intruder", "extra")}),
}


@pytest.fixture(scope="module")
def clean_image(tmp_path_factory) -> tuple[str, str, list[str]]:
    tmp = tmp_path_factory.mktemp("corrupt")
    return build(tmp, stack(links_and_implied=False) + [corpus.xattrs()])


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_tree_corruption_is_reported_exactly(clean_image, what, capsys):
    boot, blobs, tars = clean_image
    edit, want = CORRUPTIONS[what]
    bad = rewrite(boot, blobs, edit, f"{what.replace(' ', '-')}.boot")
    assert exact(check(bad, blobs, tars)) == want
    out = pathlib.Path(bad).with_suffix(".json")
    assert main(["check", bad, "--blob-dir", blobs, "--layers", *tars, "--json", str(out)]) == 1
    doc = json.loads(out.read_text())
    assert {(os.fsencode(d["path"]), d["field"]) for d in doc["differences"]} == want
    capsys.readouterr()


def test_flipped_blob_byte(tmp_path):
    boot, blobs, tars = build(tmp_path, stack(links_and_implied=False))
    assert check(boot, blobs, tars) == []
    paths = flip_chunk_of(boot, blobs, b"/usr/lib/lib.so.1")
    assert paths == {b"/usr/lib/lib.so.1", b"/usr/lib/lib.so.2"}
    diffs = check(boot, blobs, tars)
    assert exact(diffs) == {(p, "content") for p in paths}
    assert main(["check", boot, "--blob-dir", blobs, "--layers", *tars]) == 1
    assert check(boot, blobs, tars, content=False) == []


def test_reordered_layers(tmp_path):
    a = Layer().file("f", b"aaaa").file("only-a", b"1")
    b = Layer().file("f", b"bbbb").file("only-b", b"2")
    boot, blobs, tars = build(tmp_path, [a, b])
    assert check(boot, blobs, tars) == []
    diffs = check(boot, blobs, list(reversed(tars)))
    assert exact(diffs) == {(b"/f", "content")}
    assert main(["check", boot, "--blob-dir", blobs, "--layers", *reversed(tars)]) == 1


def test_omitted_whiteout(tmp_path):
    low = Layer().dir("d").file("d/gone", b"g").file("d/stays", b"s")
    up_with = Layer().whiteout("d/gone").file("d/new", b"n")
    up_without = Layer().file("d/new", b"n")
    boot, blobs, _ = build(tmp_path, [low, up_without], name="built")
    tars = [str(low.write(tmp_path / "low.tar")), str(up_with.write(tmp_path / "up.tar"))]
    diffs = check(boot, blobs, tars)
    assert exact(diffs) == {(b"/d/gone", "extra")}
    assert main(["check", boot, "--blob-dir", blobs, "--layers", *tars]) == 1


def test_corruption_count():
    # the issue asks for at least 12 kinds: tree edits + blob flip + reorder + omitted whiteout
    assert len(CORRUPTIONS) + 3 >= 12


# --- the manifest rule ----------------------------------------------------------------------------

def manifest(path: pathlib.Path, digests: list[str]) -> str:
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": "sha256:" + "0" * 64, "size": 2},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.nydus.blob.v1",
                       "digest": f"sha256:{d}", "size": 1} for d in digests]}
    path.write_text(json.dumps(doc))
    return str(path)


def test_manifest_rule(tmp_path, capsys):
    layers = [Layer().file("a", b"a"), Layer().dir("empty-layer-dir"), Layer().file("b", b"b")]
    boot, blobs, tars = build(tmp_path, layers)
    with open_image(boot, [blobs]) as image:
        ids = [b.blob_id for b in image.blobs]
    assert len(ids) == 2   # the layer without data has no blob
    every = sorted(os.listdir(blobs))
    good = manifest(tmp_path / "good.json", every)
    assert check(boot, blobs, tars, manifest=good) == []
    bad = manifest(tmp_path / "bad.json", [d for d in every if d != ids[1]])
    diffs = check(boot, blobs, tars, manifest=bad)
    assert [(d.field, d.found) for d in diffs] == [("blob", ids[1])]
    assert main(["check", boot, "--blob-dir", blobs, "--layers", *tars, "--manifest", bad]) == 1
    assert "blob table" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["check", boot, "--blob-dir", blobs, "--layers", *tars, "--manifest", str(broken)]) == 2
    assert "OCI image manifest" in capsys.readouterr().err
