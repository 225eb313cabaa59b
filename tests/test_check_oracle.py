"""The reference side of `nydusfs check` against hand-written expectations of the OCI rules."""

from __future__ import annotations

import gzip
import os
import pathlib
import stat
import tarfile

import pytest
import zstandard

import corpus
from corpus import MTIME, Layer
from conftest import needs_root
from nydusfs.check import oracle
from nydusfs.check.compare import Entry, flatten
from nydusfs.errors import LayerError
from nydusfs.format.blob import digest

NS = 1_000_000_000


def ref(tmp: pathlib.Path, *layers: Layer, compression: str = "none") -> dict[bytes, Entry]:
    paths = [str(layer.write(tmp / f"layer{i}.tar", compression)) for i, layer in enumerate(layers)]
    return flatten(oracle.reference(paths))


def canon(tree: dict[bytes, Entry]) -> dict[bytes, Entry]:
    """Hard-link identity as the group's first path (ids differ between runs)."""
    first: dict[object, bytes] = {}
    for path in sorted(tree):
        if tree[path].link is not None:
            first.setdefault(tree[path].link, path)
    for e in tree.values():
        if e.link is not None:
            e.link = first.get(e.link, e.link)   # the names of a hard link share one entry
    return tree


def names(tree: dict[bytes, Entry]) -> set[bytes]:
    return set(tree)


def b3(data: bytes) -> bytes:
    return digest(data, "blake3")


# --- whiteouts -------------------------------------------------------------------------------

def test_whiteout_removes_lower_path_and_subtree(tmp_path):
    low = Layer().dir("a").file("a/keep", b"k").dir("a/sub").file("a/sub/deep", b"d").file("a/f", b"f")
    up = Layer().whiteout("a/sub").whiteout("a/f")
    assert names(ref(tmp_path, low, up)) == {b"/", b"/a", b"/a/keep"}


def test_whiteout_applies_to_lower_layers_only_whatever_its_position(tmp_path):
    low = Layer().file("x", b"old").file("y", b"old")
    # the same layer re-adds x after and y before whiteing them out: both stay, with new content
    up = Layer().file("y", b"new y").whiteout("x").whiteout("y").file("x", b"new x")
    t = ref(tmp_path, low, up)
    assert t[b"/x"].digest == b3(b"new x")
    assert t[b"/y"].digest == b3(b"new y")


def test_whiteout_of_a_missing_path_creates_nothing(tmp_path):
    t = ref(tmp_path, Layer().file("f", b"1"), Layer().whiteout("nodir/x").opaque("other").whiteout("g"))
    assert names(t) == {b"/", b"/f"}


def test_markers_never_appear_even_in_the_bottom_layer(tmp_path):
    t = ref(tmp_path, corpus.whiteouts())
    assert names(t) == {b"/", b"/w", b"/w/new"}


def test_opaque_hides_lower_children_only_in_any_order(tmp_path):
    low = Layer().dir("o", mode=0o700, uid=7).file("o/old", b"o").dir("o/d").file("o/d/x", b"x")
    up_after = Layer().file("o/new", b"n").opaque("o")       # marker after the sibling
    up_before = Layer().opaque("o").file("o/new", b"n")
    for up in (up_after, up_before):
        t = ref(tmp_path, low, up)
        assert names(t) == {b"/", b"/o", b"/o/new"}
        # the upper layer only implies o/: it keeps the lower attributes
        assert (t[b"/o"].mode, t[b"/o"].uid) == (0o700, 7)


def test_opaque_with_directory_entry_takes_upper_attributes(tmp_path):
    low = Layer().dir("o", mode=0o700).file("o/old")
    up = Layer().dir("o", mode=0o755, mtime=5).opaque("o")
    t = ref(tmp_path, low, up)
    assert names(t) == {b"/", b"/o"}
    assert (t[b"/o"].mode, t[b"/o"].mtime_ns) == (0o755, 5 * NS)


def test_spec_example_opaque_then_recreate(tmp_path):
    # image-spec layer.md: "a/.wh..wh..opq is applied first ... regardless of the ordering"
    low = Layer().dir("a").dir("a/b").dir("a/b/c").file("a/b/c/bar")
    up = Layer().dir("a").dir("a/b").dir("a/b/c").file("a/b/c/foo").opaque("a")
    assert names(ref(tmp_path, low, up)) == {b"/", b"/a", b"/a/b", b"/a/b/c", b"/a/b/c/foo"}


# --- changeset over existing files ---------------------------------------------------------------

def test_directory_over_directory_replaces_attributes_and_keeps_children(tmp_path):
    low = Layer().dir("d", mode=0o700, uid=1, gid=2, mtime=10, xattrs={b"user.a": b"1"}).file("d/f")
    up = Layer().dir("d", mode=0o751, uid=3, gid=4, mtime=20)
    t = ref(tmp_path, low, up)
    d = t[b"/d"]
    assert (d.mode, d.uid, d.gid, d.mtime_ns, d.xattrs) == (0o751, 3, 4, 20 * NS, {})
    assert b"/d/f" in t


def test_type_changes_replace_the_path(tmp_path):
    low = (Layer().file("f2d", b"x").dir("d2f").file("d2f/child").symlink("l2d", "somewhere")
           .dir("d2l").file("d2l/c"))
    up = Layer().dir("f2d").file("f2d/in").file("d2f", b"now a file").dir("l2d").symlink("d2l", "t")
    t = ref(tmp_path, low, up)
    assert (t[b"/f2d"].kind, t[b"/d2f"].kind, t[b"/l2d"].kind, t[b"/d2l"].kind) == \
        ("dir", "file", "dir", "symlink")
    assert names(t) == {b"/", b"/f2d", b"/f2d/in", b"/d2f", b"/l2d", b"/d2l"}


def test_implied_parents_keep_lower_metadata(tmp_path):
    low = Layer().dir("usr", mode=0o750, uid=9, mtime=3, xattrs={b"user.u": b"v"})
    up = Layer().file("usr/bin/tool", b"t")
    t = ref(tmp_path, low, up)
    usr = t[b"/usr"]
    assert (usr.mode, usr.uid, usr.mtime_ns, usr.xattrs) == (0o750, 9, 3 * NS, {b"user.u": b"v"})
    # named by no layer at all: only type and entries are known
    bin_ = t[b"/usr/bin"]
    assert bin_.kind == "dir" and (bin_.mode, bin_.uid, bin_.mtime_ns, bin_.xattrs) == (None,) * 4
    assert t[b"/"].mode is None


def test_root_entry_sets_root_attributes(tmp_path):
    t = ref(tmp_path, Layer().dir("./", mode=0o711, uid=4, mtime=8).file("f"))
    assert (t[b"/"].mode, t[b"/"].uid, t[b"/"].mtime_ns) == (0o711, 4, 8 * NS)


def test_duplicates_last_wins(tmp_path):
    t = ref(tmp_path, corpus.duplicates())
    assert t[b"/dup"].digest == b3(b"second wins") and t[b"/dup"].mode == 0o600
    assert t[b"/dd"].mode == 0o755


# --- hard links --------------------------------------------------------------------------------

def test_hardlinks_within_a_layer(tmp_path):
    t = ref(tmp_path, corpus.links())
    group = [t[p] for p in (b"/l/target", b"/l/hard1", b"/l/hard2")]
    assert {e.link for e in group} == {group[0].link}
    assert [e.nlink for e in group] == [3, 3, 3]
    assert t[b"/l/sym"].nlink == 1 and t[b"/l/sym"].link != group[0].link


def test_hardlink_takes_no_attributes_from_its_own_header(tmp_path):
    layer = Layer().file("t", b"x", mode=0o600, uid=5)
    ti = tarfile.TarInfo("h")
    ti.type, ti.linkname, ti.mode, ti.uid, ti.mtime = tarfile.LNKTYPE, "t", 0o777, 99, 1
    t = ref(tmp_path, layer.raw(ti))
    assert (t[b"/h"].mode, t[b"/h"].uid, t[b"/h"].mtime_ns) == (0o600, 5, MTIME * NS)


def test_hardlink_to_a_lower_layer_file_shares_its_inode(tmp_path):
    t = ref(tmp_path, Layer().file("base", b"b"), Layer().hardlink("again", "base"))
    assert t[b"/base"].link == t[b"/again"].link and t[b"/again"].nlink == 2


def test_replacing_one_name_splits_the_group(tmp_path):
    low = Layer().file("a", b"shared").hardlink("b", "a").hardlink("c", "a")
    up = Layer().file("b", b"own")
    t = ref(tmp_path, low, up)
    assert t[b"/a"].link == t[b"/c"].link != t[b"/b"].link
    assert (t[b"/a"].nlink, t[b"/b"].nlink, t[b"/b"].digest) == (2, 1, b3(b"own"))


def test_link_keeps_the_old_inode_when_its_target_is_replaced_later(tmp_path):
    layer = Layer().file("t", b"first").hardlink("h", "t").file("t", b"second")
    t = ref(tmp_path, layer)
    assert t[b"/h"].digest == b3(b"first") and t[b"/t"].digest == b3(b"second")
    assert t[b"/h"].nlink == t[b"/t"].nlink == 1


# --- attributes as bytes ------------------------------------------------------------------------

def test_attributes_are_exact(tmp_path):
    t = ref(tmp_path, corpus.everything())
    assert t[b"/nsec"].mtime_ns == 1_700_000_000_123_456_789
    assert t[b"/old"].mtime_ns == NS
    assert t[b"/user"].xattrs == {b"user.k": b"v", b"user.bin": b"\x00\x01\xff\x00", b"trusted.t": b"y"}
    assert t[b"/n\xff\xfe/\xe9t\xe9"].digest == b3(b"latin-1 name")
    assert (t[b"/bigids"].uid, t[b"/bigids"].gid) == ((1 << 21) + 5, (1 << 32) - 2)
    assert (t[b"/bin/suid"].mode, t[b"/bin/sgid"].mode, t[b"/tmp"].mode, t[b"/bin/all"].mode) == \
        (0o4755, 0o2755, 0o1777, 0o7777)
    assert (t[b"/dev/big"].rdev, t[b"/dev/loop0"].kind, t[b"/dev/pipe"].kind) == ((300, 70000), "block", "fifo")
    assert t[b"/l/long"].target == b"t/" + b"x" * 300
    assert t[b"/d/multi"].size == 3 * corpus.CHUNK + 777
    assert t[b"/dotslash"].kind == "file"
    assert t[b"/a/b/c"].kind == "dir" and t[b"/a"].mode is None


def test_negative_and_fractional_pax_mtimes(tmp_path):
    t = ref(tmp_path, Layer().file("neg", mtime="-1.5").file("frac", mtime="3.000000001"))
    assert t[b"/neg"].mtime_ns == 0          # before 1970: 0, as create stores it
    assert t[b"/frac"].mtime_ns == 3 * NS + 1


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressions_read_the_same(tmp_path, compression):
    plain = ref(tmp_path, corpus.everything())
    other = ref(tmp_path, corpus.everything(), compression=compression)
    assert canon(plain) == canon(other)


def test_gnu_and_ustar_formats(tmp_path):
    layer = corpus.regular_files()
    for fmt in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        p = layer.write(tmp_path / "l.tar", fmt=fmt)
        t = flatten(oracle.reference([str(p)]))
        assert t[b"/d/multi"].digest == b3(corpus.pattern(3 * corpus.CHUNK + 777, 4))


# --- bad input: LayerError naming member and offset ------------------------------------------------

def _error(tmp: pathlib.Path, raw: bytes, name: str = "bad.tar") -> LayerError:
    p = tmp / name
    p.write_bytes(raw)
    with pytest.raises(LayerError) as info:
        oracle.reference([str(p)])
    return info.value


def test_hardlink_to_nothing_is_an_error(tmp_path):
    raw = Layer().file("a").hardlink("h", "missing").tar()
    e = _error(tmp_path, raw)
    assert e.member == b"h" and e.offset is not None and e.offset > 0
    assert "does not exist" in str(e)


def test_parent_that_is_not_a_directory_is_an_error(tmp_path):
    e = _error(tmp_path, Layer().file("f").file("f/x.so").tar())
    assert e.member == b"f/x.so" and "is a file" in str(e)
    e = _error(tmp_path, Layer().file("t").symlink("ln", "t").file("ln/x").tar())
    assert e.member == b"ln/x" and "is a file" in str(e)


def test_symlink_loop_in_a_parent_is_an_error(tmp_path):
    e = _error(tmp_path, Layer().symlink("a", "b").symlink("b", "a").file("a/x").tar())
    assert "symbolic links" in str(e)


def test_parents_follow_symlinks_inside_the_root(tmp_path):
    low = (Layer().dir("usr").dir("usr/lib").file("usr/lib/old", b"old").file("usr/lib/t", b"t")
           .symlink("lib", "usr/lib").symlink("abs", "/usr/lib").symlink("up", "../../usr")
           .symlink("dangling", "nowhere/deeper"))
    up = (Layer().file("lib/new", b"rel").file("abs/new2", b"abs").file("up/lib/new3", b"up")
          .whiteout("lib/old").hardlink("h", "abs/t").file("dangling/f", b"d"))
    t = ref(tmp_path, low, up)
    assert {p for p in t if p.startswith(b"/usr/lib/")} == {
        b"/usr/lib/new", b"/usr/lib/new2", b"/usr/lib/new3", b"/usr/lib/t"}
    assert (t[b"/lib"].kind, t[b"/abs"].kind, t[b"/dangling"].kind) == ("symlink",) * 3
    # a dangling symlink leads to where it points: the directories are made there
    assert t[b"/nowhere/deeper/f"].digest == b3(b"d") and t[b"/nowhere"].mode is None
    assert t[b"/h"].link == t[b"/usr/lib/t"].link and t[b"/h"].nlink == 2


def test_final_component_symlink_is_replaced_not_followed(tmp_path):
    low = Layer().dir("real").file("real/x").symlink("ln", "real")
    t = ref(tmp_path, low, Layer().dir("ln", mode=0o700))
    assert t[b"/ln"].kind == "dir" and t[b"/ln"].mode == 0o700 and b"/ln/x" not in t
    assert b"/real/x" in t


def test_hardlink_without_target_is_an_error(tmp_path):
    e = _error(tmp_path, Layer().file("a").hardlink("h", "./").tar())
    assert e.member == b"h" and "does not exist" in str(e)


def test_hardlink_to_a_directory_is_an_error(tmp_path):
    e = _error(tmp_path, Layer().dir("d").hardlink("h", "d").tar())
    assert "directory" in str(e)


def test_truncated_tar(tmp_path):
    raw = Layer().file("big", corpus.pattern(100_000)).tar()
    e = _error(tmp_path, raw[:50_000])
    assert e.member == b"big" and e.offset == 0


def test_damaged_header_is_not_taken_for_the_end(tmp_path):
    raw = bytearray(Layer().file("a", b"x" * 600).file("b", b"y").tar())
    second = 512 * (1 + 2)    # header a, two data blocks
    raw[second:second + 10] = b"\xff" * 10
    e = _error(tmp_path, bytes(raw))
    assert e.offset == second


def test_corrupt_gzip_and_zstd(tmp_path):
    raw = Layer().file("f", corpus.pattern(200_000)).tar()
    gz = bytearray(gzip.compress(raw))
    gz[len(gz) // 2] ^= 0xFF
    e = _error(tmp_path, bytes(gz), "bad.tar.gz")
    assert e.member == b"f" and "CRC" in str(e)
    zs = zstandard.ZstdCompressor().compress(raw)
    e = _error(tmp_path, zs[:len(zs) // 2], "bad.tar.zst")
    assert e.member == b"f"


def test_missing_layer_file(tmp_path):
    with pytest.raises(LayerError, match="no such file"):
        oracle.reference([str(tmp_path / "nope.tar")])


def test_not_a_tar(tmp_path):
    _error(tmp_path, b"this is not a tar archive at all" * 100)


# --- untarred layers ---------------------------------------------------------------------------

def _materialize(top: pathlib.Path, layer: Layer) -> None:
    """Write a layer's entries as files (what `tar -x` of it would leave), with exact metadata."""
    top.mkdir()
    dirs = []
    for ti, data in layer.entries:
        raw = os.fsencode(ti.name)
        path = os.path.join(os.fsencode(top), raw.lstrip(b"./").lstrip(b"/"))
        if not raw.strip(b"./"):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if ti.type == tarfile.DIRTYPE:
            os.makedirs(path, exist_ok=True)
        elif ti.type == tarfile.SYMTYPE:
            os.symlink(os.fsencode(ti.linkname), path)
        elif ti.type == tarfile.LNKTYPE:
            os.link(os.path.join(os.fsencode(top), os.fsencode(ti.linkname)), path)
            continue
        elif ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
                    tarfile.FIFOTYPE: stat.S_IFIFO}[ti.type]
            os.mknod(path, kind | 0o600, os.makedev(ti.devmajor, ti.devminor))
        else:
            if os.path.lexists(path):
                os.unlink(path)
            with open(path, "wb") as f:
                f.write(data or b"")
        os.lchown(path, ti.uid, ti.gid)
        if ti.type != tarfile.SYMTYPE:
            os.chmod(path, ti.mode)
        for k, v in ti.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                os.setxattr(path, os.fsencode(k[13:]), os.fsencode(v), follow_symlinks=False)
        mtime = ti.pax_headers.get("mtime", str(ti.mtime))
        sec, _, frac = mtime.partition(".")
        ns = int(sec) * NS + int((frac + "000000000")[:9])
        (dirs if ti.type == tarfile.DIRTYPE else []).append((path, ns))
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    for path, ns in reversed(dirs):  # children changed directory mtimes: set them last
        os.utime(path, ns=(ns, ns))


@needs_root
def test_directory_layers_read_like_tars(tmp_path):
    low = corpus.everything()
    low.entries = [(ti, d) for ti, d in low.entries if ti.name not in ("dup", "dd")]  # one per path
    up = Layer().dir("l").whiteout("l/sym").dir("bin").opaque("bin").file("bin/new", b"n", mode=0o700)
    _materialize(tmp_path / "d0", low)
    _materialize(tmp_path / "d1", up)
    from_dirs = flatten(oracle.reference([str(tmp_path / "d0"), str(tmp_path / "d1")]))
    from_tars = ref(tmp_path, low, up)
    canon(from_dirs), canon(from_tars)
    assert from_dirs.keys() == from_tars.keys()
    for path, e in from_tars.items():
        d = from_dirs[path]
        if e.mode is None:  # implied directories: tar -x made them with its own metadata
            assert d.kind == "dir"
            continue
        if e.kind == "symlink":
            d.mode = e.mode  # symlink modes are the host's
        assert d == e, path
    assert from_dirs[b"/l/hard1"].nlink == 3
