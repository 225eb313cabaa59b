"""`nydusfs unpack`: the merged tree as one OCI layer tar, read back by independent readers.

Every stack of tests/stacks.py (whiteouts, opaque dirs, hard links across layers, devices,
non-UTF-8 names, binary xattrs, nanosecond mtimes) is created, merged and unpacked, v5 and v6;
then Python's tarfile reads the tar into the same snapshot form as the stacks' own reference
model (which never touches nydusfs code), umoci and GNU tar extract it to trees compared with
umoci's unpack of the source layers (tools/treediff.py), and `nydusfs check` compares the tar
with the bootstrap.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat
import struct
import subprocess
import sys
import tarfile

import pytest
import stacks
from conftest import needs_root, needs_tool
from mount_helpers import nydusfs
from stacks import STACKS, Entry

from nydusfs.check import CheckOptions, run_check
from nydusfs.merge import merge as merge_layers
from nydusfs.reader import open_image
from nydusfs.unpack import unpack as unpack_image

VERSIONS = [5, 6]


# a valid VFS_CAP_REVISION_2 value (magic | effective, permitted = CAP_NET_BIND_SERVICE)
VALID_CAPABILITY = struct.pack("<IIIII", 0x0200_0001, 1 << 10, 0, 0, 0)
CAP = "SCHILY.xattr.security.capability"


def kernel_acceptable(layers: list) -> list:
    """The kernel refuses a security.capability value that is not a capability set (EINVAL),
    so trees extracted to disk carry a valid one where a stack has arbitrary bytes."""
    for layer in layers:
        for ti, _data in layer.entries:
            if CAP in ti.pax_headers:
                ti.pax_headers[CAP] = VALID_CAPABILITY.decode("utf-8", "surrogateescape")
    return layers


def merged(tmp: pathlib.Path, name: str, version: int, on_disk: bool = False
           ) -> tuple[list, pathlib.Path, pathlib.Path]:
    layers = STACKS[name]().layers
    if on_disk:
        layers = kernel_acceptable(layers)
    paths = stacks.build_layers(layers, tmp, version=version)
    boot = tmp / "image.boot"
    done = nydusfs("merge", *paths, "--bootstrap", boot)
    assert done.returncode == 0, done.stderr
    return layers, boot, tmp / "layers"


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    """(layers, bootstrap, blob dir, tar) of a stack, built and unpacked once per module."""
    made: dict[tuple[str, int, bool], tuple] = {}

    def get(name: str, version: int, on_disk: bool = False) -> tuple:
        # a stack without a capability xattr is the same on disk: build it once
        on_disk = on_disk and any(CAP in ti.pax_headers for layer in STACKS[name]().layers
                                  for ti, _d in layer.entries)
        key = (name, version, on_disk)
        if key not in made:
            tmp = tmp_path_factory.mktemp(f"{name}-v{version}{'-disk' if on_disk else ''}")
            # in-process merge and unpack (the command line is tested below, on fewer stacks)
            layers = STACKS[name]().layers
            if on_disk:
                layers = kernel_acceptable(layers)
            paths = stacks.build_layers(layers, tmp, version=version)
            boot = tmp / "image.boot"
            boot.write_bytes(merge_layers(paths).bootstrap())
            with open_image(boot, [tmp / "layers"]) as image, open(tmp / "out.tar", "wb") as f:
                stats = unpack_image(image, f)
            assert stats.sockets_skipped == []
            made[key] = (layers, boot, tmp / "layers", tmp / "out.tar")
        return made[key]

    return get


def unpack(boot: pathlib.Path, blob_dir: pathlib.Path, out: pathlib.Path | str) -> subprocess.CompletedProcess:
    return nydusfs("unpack", boot, "--blob-dir", blob_dir, "-o", out)


def tar_snapshot(path: pathlib.Path) -> dict[bytes, Entry]:
    """The tar as Python's tarfile reads it, in the stacks' snapshot form."""
    raw: dict[bytes, dict] = {}
    groups: dict[bytes, list[bytes]] = {}
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as tf:
        for ti in tf:
            name = ti.name.encode("utf-8", "surrogateescape")
            assert name == b"." or name.startswith(b"./"), name   # tarfile drops the trailing '/'
            p = b"/" if name == b"." else name[1:]
            pax = ti.pax_headers
            sec, _, frac = pax.get("mtime", str(int(ti.mtime))).partition(".")
            mtime = (int(sec), int(frac.ljust(9, "0")) if frac else 0)
            xattrs = tuple(sorted((k[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape"),
                                   v.encode("utf-8", "surrogateescape"))
                                  for k, v in pax.items() if k.startswith("SCHILY.xattr.")))
            rec = {"mode": ti.mode, "uid": ti.uid, "gid": ti.gid, "mtime": mtime, "xattrs": xattrs}
            if ti.islnk():
                target = b"/" + ti.linkname.encode("utf-8", "surrogateescape")[2:]
                groups.setdefault(target, [target]).append(p)
                raw[p] = dict(raw[target], **rec)
                continue
            if ti.isdir():
                rec.update(kind="dir", size=None, content=None, symlink=None, rdev=0)
            elif ti.issym():
                link = ti.linkname.encode("utf-8", "surrogateescape")
                rec.update(kind="symlink", size=len(link), content=None, symlink=link, rdev=0)
            elif ti.isreg():
                data = tf.extractfile(ti).read()  # type: ignore[union-attr]
                rec.update(kind="file", size=len(data), content=data, symlink=None, rdev=0)
            else:
                kind = {tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}[ti.type]
                rdev = os.makedev(ti.devmajor, ti.devminor) if kind != "fifo" else 0
                rec.update(kind=kind, size=None, content=None, symlink=None, rdev=rdev)
            assert p not in raw, f"{p!r} twice in the tar"
            raw[p] = rec
    out = {}
    for p, rec in raw.items():
        if rec["kind"] == "dir":
            subdirs = sum(1 for q, r in raw.items() if r["kind"] == "dir" and q != b"/"
                          and os.path.dirname(q) == p)
            out[p] = Entry(nlink=2 + subdirs, links=(), **rec)
        else:
            group = next((g for g in groups.values() if p in g), [p])
            out[p] = Entry(nlink=len(group), links=tuple(sorted(group)), **rec)
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(STACKS))
def test_tarfile_reads_the_reference_tree(unpacked, name, version):
    layers, boot, blobs, out = unpacked(name, version)
    got = tar_snapshot(out)
    assert stacks.differences(got, stacks.reference(layers)) == []
    # and the tar agrees with nydusfs's own reader of the bootstrap
    assert stacks.differences(got, stacks.snapshot_image(boot, [blobs])) == []


def disk_snapshot(root: pathlib.Path) -> dict[bytes, Entry]:
    """An extracted tree in the stacks' snapshot form (lstat, xattrs, contents)."""
    base = os.fsencode(root)
    found: dict[bytes, tuple[os.stat_result, bytes]] = {}
    for top, dirs, files in os.walk(base):
        for n in [b"", *dirs, *files] if top == base else [*dirs, *files]:
            full = os.path.join(top, n) if n else top
            rel = full[len(base):] or b"/"
            found[rel] = (os.lstat(full), full)
    groups: dict[tuple[int, int], list[bytes]] = {}
    for p, (st, _f) in found.items():
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), []).append(p)
    out = {}
    for p, (st, full) in found.items():
        kind = stacks.KINDS[stat.S_IFMT(st.st_mode)]
        xattrs = tuple(sorted((os.fsencode(n), os.getxattr(full, n, follow_symlinks=False))
                              for n in os.listxattr(full, follow_symlinks=False)
                              if n != "security.selinux"))
        content = pathlib.Path(os.fsdecode(full)).read_bytes() if kind == "file" else None
        link = os.readlink(full) if kind == "symlink" else None
        out[p] = Entry(kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                       mtime=divmod(st.st_mtime_ns, 10**9), xattrs=xattrs,
                       size=st.st_size if kind in ("file", "symlink") else None, content=content,
                       symlink=link, rdev=st.st_rdev if kind in ("char", "block") else 0,
                       nlink=st.st_nlink,
                       links=() if kind == "dir" else tuple(sorted(groups[(st.st_dev, st.st_ino)])))
    return out


@needs_root
@needs_tool("umoci")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(STACKS))
def test_umoci_unpacks_it_to_the_reference_tree(tmp_path, unpacked, name, version):
    layers, _boot, _blobs, out = unpacked(name, version, on_disk=True)
    image = f"{tmp_path / 'oci'}:t"
    for args in (["init", "--layout", str(tmp_path / "oci")], ["new", "--image", image],
                 ["raw", "add-layer", "--image", image, str(out)],
                 ["unpack", "--image", image, str(tmp_path / "bundle")]):
        subprocess.run(["umoci", *args], check=True, capture_output=True)
    got = disk_snapshot(tmp_path / "bundle" / "rootfs")
    assert stacks.differences(got, stacks.reference(layers)) == []


@needs_root
@needs_tool("tar")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(STACKS))
def test_gnu_tar_extracts_it_to_the_reference_tree(tmp_path, unpacked, name, version):
    layers, _boot, _blobs, out = unpacked(name, version, on_disk=True)
    extracted = tmp_path / "gnu"
    extracted.mkdir()
    done = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf",
                           str(out), "-C", str(extracted)], check=True, capture_output=True)
    # GNU tar does not know pax's hdrcharset (it takes the name's bytes as they are, which is
    # what BINARY means) and says so; nothing else may be reported
    warnings = [w for w in done.stderr.splitlines()
                if w != b"tar: Ignoring unknown extended header keyword 'hdrcharset'"]
    assert warnings == []
    got = disk_snapshot(extracted)
    assert stacks.differences(got, stacks.reference(layers)) == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(STACKS))
def test_check_finds_the_tar_equal_to_the_bootstrap(unpacked, name, version):
    """nydusfs check's OCI oracle (written apart from merge and unpack) applies the one tar and
    compares every field with the bootstrap and its blobs."""
    _layers, boot, blobs, out = unpacked(name, version)
    result = run_check(CheckOptions(bootstrap=str(boot), layers=[str(out)], blob_dirs=[str(blobs)]))
    assert result.differences == []
    assert result.expected_paths == result.found_paths > 1


@pytest.mark.parametrize("version", VERSIONS)
def test_check_of_the_unpacked_tar_against_the_bootstrap_is_clean(tmp_path, version):
    _layers, boot, blobs = merged(tmp_path, "three_layers", version)
    out = tmp_path / "out.tar"
    assert unpack(boot, blobs, out).returncode == 0
    done = nydusfs("check", boot, "--blob-dir", blobs, "--layers", out, "--no-progress")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.parametrize("version", VERSIONS)
def test_same_input_same_bytes_file_and_stdout(tmp_path, version):
    _layers, boot, blobs = merged(tmp_path, "hardlinks_to_lower_files", version)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert unpack(boot, blobs, a).returncode == 0
    assert unpack(boot, blobs, b).returncode == 0
    piped = nydusfs("unpack", boot, "--blob-dir", blobs, "-o", "-")
    assert piped.returncode == 0 and piped.stderr == b""
    assert a.read_bytes() == b.read_bytes() == piped.stdout
    # the same tree built again in another directory (other temp names, other times) too
    again = tmp_path / "again"
    _l, boot2, blobs2 = merged(again, "hardlinks_to_lower_files", version)
    assert unpack(boot2, blobs2, tmp_path / "c.tar").returncode == 0
    assert hashlib.sha256((tmp_path / "c.tar").read_bytes()).digest() == hashlib.sha256(a.read_bytes()).digest()
    assert sorted(os.listdir(tmp_path)) == sorted(["a.tar", "b.tar", "c.tar", "again", "layers",
                                                   "image.boot"] + [f"layer{i}.tar" for i in range(2)])


def test_pax_headers_carry_exact_values(tmp_path):
    """The raw headers, read here by hand: the nanosecond mtime, the big uid, the binary xattr
    value and a non-UTF-8 name are pax records with the exact bytes."""
    _l, boot, blobs = merged(tmp_path, "specials_carried", 6)
    assert unpack(boot, blobs, tmp_path / "out.tar").returncode == 0
    raw = (tmp_path / "out.tar").read_bytes()
    assert b" mtime=1700000000.123456789\n" in raw
    assert b" uid=2097157\n" in raw
    assert b" SCHILY.xattr.security.capability=" + bytes(range(20)) + b"\n" in raw
    assert raw[-1024:] == bytes(1024) and len(raw) % 512 == 0
    _l, boot, blobs = merged(tmp_path / "names", "non_utf8_names", 6)
    assert unpack(boot, blobs, tmp_path / "names.tar").returncode == 0
    assert b"21 hdrcharset=BINARY\n" in (tmp_path / "names.tar").read_bytes()


def test_sockets_are_left_out_and_named(tmp_path):
    """A tar has no socket type (create never makes one; an image built elsewhere may hold
    one): unpack leaves it out and says so."""
    from nydusfs.tree.node import Node, Tree, new_dir
    from nydusfs.write.bootstrap_v6 import write_v6

    tree = Tree(new_dir())
    tree.root.children[b"sock"] = Node(mode=stat.S_IFSOCK | 0o755)  # type: ignore[index]
    tree.root.children[b"f"] = Node(mode=stat.S_IFIFO | 0o644)  # type: ignore[index]
    (tmp_path / "b.boot").write_bytes(write_v6(tree)[0])
    done = nydusfs("unpack", tmp_path / "b.boot", "-o", tmp_path / "out.tar")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"nydusfs unpack: /sock: socket left out (tar has no socket type)\n"
    with tarfile.open(tmp_path / "out.tar") as tf:
        assert tf.getnames() == [".", "./f"]


# --- bad input: one line, exit 2, nothing left behind -----------------------------------------

def test_missing_blob_fails_and_leaves_nothing(tmp_path):
    _l, boot, _blobs = merged(tmp_path, "three_layers", 6)
    out = tmp_path / "out.tar"
    out.write_bytes(b"old contents")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = unpack(boot, empty, out)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.startswith("nydusfs unpack: error: ") and err.count("\n") == 1, err
    assert out.read_bytes() == b"old contents"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.tar")] == []


def test_corrupt_chunk_fails_its_digest_and_leaves_nothing(tmp_path):
    _l, boot, blobs = merged(tmp_path, "three_layers", 6)
    # flip one byte in the middle of the largest layer file's data
    victim = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    with stacks.open_image(boot, [blobs]) as image:
        chunk = next(c for p, ino in image.walk() if image.inode(ino).is_reg
                     for c in image.chunks(ino) if image.blob_store.path_of(c.blob_index) == str(victim))
        where = chunk.compressed_offset + chunk.compressed_size // 2
    data[where] ^= 0xFF
    victim.write_bytes(bytes(data))
    out = tmp_path / "out.tar"
    done = unpack(boot, blobs, out)
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "digest mismatch" in err, err
    # the message names the file, the blob and the chunk
    assert err.startswith("nydusfs unpack: error: /") and victim.name in err and " chunk " in err
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.tar")] == []


def test_usage_errors(tmp_path):
    _l, boot, blobs = merged(tmp_path, "whiteout_file", 6)
    done = unpack(boot, blobs, tmp_path)
    assert done.returncode == 2 and b"is a directory" in done.stderr
    done = nydusfs("unpack", boot, "--blob-dir", tmp_path / "nope", "-o", tmp_path / "x.tar")
    assert done.returncode == 2 and b"not a directory" in done.stderr
    done = nydusfs("unpack", tmp_path / "missing.boot", "-o", tmp_path / "x.tar")
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1
    assert not (tmp_path / "x.tar").exists()


def test_memory_stays_bounded_for_big_files(tmp_path):
    """Data is streamed chunk by chunk: a 192 MiB file goes through a pipe with a peak RSS far
    below its size (the tar is counted, not kept)."""
    import corpus

    block = corpus.pattern(1 << 20, 3)
    layer = corpus.Layer().file("big", block * 192)
    tar = layer.write(tmp_path / "l.tar")
    done = nydusfs("create", tar, "-o", tmp_path / "layer", "--compressor", "none")
    assert done.returncode == 0, done.stderr
    del layer, block
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'nydusfs', 'unpack', sys.argv[1], '-o', '-'],"
        " stdout=subprocess.PIPE)\n"
        "n = 0\n"
        "while blk := p.stdout.read(1 << 20):\n"
        "    n += len(blk)\n"
        "assert p.wait() == 0\n"
        "print(n, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    got = subprocess.run([sys.executable, "-c", code, str(tmp_path / "layer")], capture_output=True,
                         text=True, check=True)
    size, peak_kib = map(int, got.stdout.split())
    assert size > 192 << 20
    assert peak_kib < 120 * 1024, f"peak RSS {peak_kib} KiB"


def test_pax_record_length_counts_itself():
    """POSIX pax: 'LEN key=value\\n', LEN the record's length including its own digits; checked
    across the lengths where LEN gains a digit."""
    from nydusfs.unpack.tar import pax_record

    for n in range(1100):
        rec = pax_record(b"path", b"x" * n)
        length, _, rest = rec.partition(b" ")
        assert int(length) == len(rec) and rest == b"path=" + b"x" * n + b"\n"


def test_ustar_fields_at_their_offsets():
    """POSIX ustar header offsets (name 0, mode 100, uid 108, gid 116, size 124, mtime 136,
    chksum 148, typeflag 156, linkname 157, magic 257, version 263, devmajor 329, devminor 337),
    read back here by slicing and by tarfile."""
    from nydusfs.unpack.tar import CHR, Entry, entry_header

    raw = entry_header(Entry(name=b"./dev/x", kind=CHR, mode=0o4620, uid=7, gid=8,
                             mtime=1_700_000_000, devmajor=4, devminor=65))
    assert len(raw) == 512     # nothing needs pax
    assert raw[0:7] == b"./dev/x" and raw[100:108] == b"0004620\0"
    assert raw[108:116] == b"0000007\0" and raw[116:124] == b"0000010\0"
    assert raw[124:136] == b"00000000000\0" and raw[136:148] == b"%011o\0" % 1_700_000_000
    assert raw[156:157] == b"3" and raw[257:265] == b"ustar\x0000"
    assert raw[265:297] == bytes(32) and raw[297:329] == bytes(32)        # uname, gname empty
    assert raw[329:337] == b"0000004\0" and raw[337:345] == b"0000101\0"
    assert int(raw[148:154], 8) == sum(raw[:148]) + 8 * 32 + sum(raw[156:])
    ti = tarfile.TarInfo.frombuf(raw, "utf-8", "surrogateescape")
    assert (ti.name, ti.mode, ti.uid, ti.gid, ti.devmajor, ti.devminor) == ("./dev/x", 0o4620, 7, 8, 4, 65)


def test_output_is_all_or_nothing_on_error_and_sigterm(tmp_path):
    """The output helper: a body that fails, or a SIGTERM while writing, leaves no temp file and
    the previous OUT as it was; a body that completes replaces it, mode from the umask."""
    import signal

    from nydusfs.unpack.output import output

    out = tmp_path / "out.tar"
    out.write_bytes(b"previous")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), output(str(out)) as sink:
        sink.write(b"partial")
        raise RuntimeError("reader failed")
    with pytest.raises(SystemExit) as stop, output(str(out)) as sink:
        sink.write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before     # the handler is the caller's again
    assert out.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.tar"]
    old = os.umask(0o027)
    try:
        with output(str(out)) as sink:
            sink.write(b"complete")
    finally:
        os.umask(old)
    assert out.read_bytes() == b"complete" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.tar"]
