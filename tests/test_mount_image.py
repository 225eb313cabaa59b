"""Images written in code (Tree -> RAFS v5/v6 bootstrap + blobs assembled here), mounted, and
checked field by field: attributes, data, xattrs, links, directory offsets, read-only
behaviour, statfs, the uid/gid rule and the caching contract."""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import stat

import pytest

from conftest import needs_root
from corpus import pattern
from mount_helpers import ImageBuilder, Mounts, compare_with_built, compare_with_reader
from nydusfs.reader import open_image

pytestmark = needs_root

CAP = bytes.fromhex("0100000200200000000000000000000000000000")   # cap_net_bind_service, v2



def rich_image(version: int, compressor: str = "zstd", digester: str = "blake3",
               explicit_uid_gid: bool = True) -> ImageBuilder:
    b = ImageBuilder(version=version, compressor=compressor, digester=digester,
                     chunk_size=0x4000, explicit_uid_gid=explicit_uid_gid, root_mode=0o750)
    b.dir("etc", mode=0o700, uid=5, gid=6, mtime=1_600_000_000, mtime_nsec=123_456_789)
    b.file("etc/empty", b"")
    b.file("etc/small", b"hello\n", mode=0o600, uid=1000, gid=100)
    b.file("etc/exact", pattern(0x4000, 1))                       # exactly one chunk
    b.file("etc/multi", pattern(5 * 0x4000 + 123, 2), mode=0o755)  # five chunks and a tail
    b.file("etc/text", b"line of text\n" * 3000)                   # compresses well
    b.hardlink("hard", "etc/multi")
    b.hardlink("etc/hard2", "etc/multi")
    b.symlink("link", "etc/small")
    b.symlink("dangling", "/does/not/exist")
    b.symlink("long", "x/" * 600)
    b.special("dev/null", stat.S_IFCHR | 0o666, rdev=os.makedev(1, 3))
    b.special("dev/big", stat.S_IFCHR | 0o600, rdev=os.makedev(300, 70000))
    b.special("dev/loop0", stat.S_IFBLK | 0o660, rdev=os.makedev(7, 0))
    b.special("dev/fifo", stat.S_IFIFO | 0o644)
    b.special("dev/sock", stat.S_IFSOCK | 0o755)
    b.file("bin/suid", b"x", mode=0o4755)
    b.file("bin/sgid", b"y", mode=0o2711)
    b.dir("tmp", mode=0o1777)
    b.file("cap", b"binary", xattrs={b"security.capability": CAP})
    b.file("xattrs", b"x", xattrs={b"user.k": b"v", b"user.bin": b"\x00\x01\xff\x00",
                                   b"trusted.t": b"y", b"user.empty": b""})
    b.dir("xdir", xattrs={b"user.dir": b"1"})
    b.file("ids", b"ids", uid=(1 << 21) + 5, gid=(1 << 32) - 2)
    b.file("old", b"o", mtime=1, mtime_nsec=999_999_999)
    b.file(b"n\xff\xfe/\xe9t\xe9", b"latin-1 name")
    b.file("sp ace/tab\there\nnewline", b"odd names")
    b.file("n" * 255, b"longest name")
    b.dir("a/b/c/d/e/f")
    return b


@pytest.mark.parametrize("version,compressor,digester", [
    (6, "zstd", "blake3"), (5, "zstd", "blake3"), (5, "lz4_block", "sha256"), (6, "none", "sha256")])
def test_every_field_matches_the_reference(mounts: Mounts, tmp_path: pathlib.Path, version: int,
                                           compressor: str, digester: str) -> None:
    built = rich_image(version, compressor, digester).build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--verify-chunks")
    with open_image(built.bootstrap, [built.blob_dir]) as image:
        entries = sum(1 for _ in built.walk())
        assert compare_with_built(built, m.path, image) == entries == 38
        assert compare_with_reader(image, m.path) == entries
    assert os.stat(m.path).st_ino == 1
    assert os.getxattr(m.path / "cap", "security.capability") == CAP
    assert os.getxattr(m.path / "xattrs", "user.bin") == b"\x00\x01\xff\x00"
    with pytest.raises(OSError) as e:
        os.getxattr(m.path / "xattrs", "user.missing")
    assert e.value.errno == errno.ENODATA
    assert os.listxattr(m.path / "etc" / "small") == []


def test_uid_gid_without_explicit_flag_are_the_servers(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    """EXPLICIT_UID_GID clear: the image records no owners, every inode shows the server's
    euid/egid (as nydusd does), whatever the inode bytes hold."""
    b = ImageBuilder(version=6, explicit_uid_gid=False)
    b.file("f", b"data", uid=1234, gid=4321)
    b.dir("d", uid=77, gid=88)
    built = b.build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    owner = (os.geteuid(), os.getegid())
    with open_image(built.bootstrap) as image:
        assert image.inode(image.resolve("/f")).uid == 1234     # stored, but not meaningful
        assert compare_with_built(built, m.path, image, owner=owner) == 3
    assert (os.lstat(m.path / "f").st_uid, os.lstat(m.path / "f").st_gid) == owner


@pytest.mark.parametrize("version", [5, 6])
def test_writes_fail_with_erofs(mounts: Mounts, tmp_path: pathlib.Path, version: int) -> None:
    built = rich_image(version).build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    p = m.path
    attempts = {
        "create": lambda: open(p / "new", "wb"),
        "open for writing": lambda: open(p / "etc" / "small", "r+b"),
        "append": lambda: open(p / "etc" / "small", "ab"),
        "truncate": lambda: os.truncate(p / "etc" / "small", 0),
        "mkdir": lambda: os.mkdir(p / "newdir"),
        "rmdir": lambda: os.rmdir(p / "tmp"),
        "unlink": lambda: os.unlink(p / "etc" / "small"),
        "rename": lambda: os.rename(p / "etc" / "small", p / "etc" / "moved"),
        "symlink": lambda: os.symlink("x", p / "newlink"),
        "link": lambda: os.link(p / "etc" / "small", p / "newhard"),
        "mknod": lambda: os.mkfifo(p / "newfifo"),
        "chmod": lambda: os.chmod(p / "etc" / "small", 0o777),
        "chown": lambda: os.chown(p / "etc" / "small", 1, 1),
        "utime": lambda: os.utime(p / "etc" / "small", (1, 1)),
        "setxattr": lambda: os.setxattr(p / "xattrs", "user.k", b"new"),
        "removexattr": lambda: os.removexattr(p / "xattrs", "user.k"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, what
    assert (p / "etc" / "small").read_bytes() == b"hello\n"
    assert os.access(p / "etc" / "small", os.R_OK) and not os.access(p / "etc" / "small", os.W_OK)


def test_statfs_and_lookups(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    built = rich_image(6).build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    with open_image(built.bootstrap) as image:
        blocks, files = image.statfs_counts()
    sv = os.statvfs(m.path)
    assert (sv.f_bsize, sv.f_blocks, sv.f_bfree, sv.f_bavail) == (4096, blocks, 0, 0)
    assert (sv.f_files, sv.f_ffree, sv.f_namemax) == (files, 0, 255)
    assert sv.f_flag & os.ST_RDONLY and sv.f_flag & os.ST_NOSUID and sv.f_flag & os.ST_NODEV
    for bad, code in [("missing", errno.ENOENT), ("etc/small/x", errno.ENOTDIR),
                      ("n" * 256, errno.ENAMETOOLONG)]:
        for _ in range(2):      # the second answer comes from the kernel's negative cache
            with pytest.raises(OSError) as e:
                os.lstat(m.path / bad)
            assert e.value.errno == code, bad
    with pytest.raises(OSError) as e:
        os.listdir(m.path / "etc" / "small")
    assert e.value.errno == errno.ENOTDIR
    assert os.path.samestat(os.stat(m.path / "a" / "b" / ".."), os.stat(m.path / "a"))


# --- directory offsets ------------------------------------------------------------------------

class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.readdir.restype = ctypes.POINTER(Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.closedir.argtypes = [ctypes.c_void_p]
    return libc


def _read_entries(libc: ctypes.CDLL, d: int, limit: int | None = None) -> list[tuple[bytes, int]]:
    out = []
    while limit is None or len(out) < limit:
        ent = libc.readdir(d)
        if not ent:
            break
        out.append((ent.contents.d_name, ent.contents.d_ino))
    return out


@pytest.mark.parametrize("version", [5, 6])
def test_readdir_offsets_are_stable(mounts: Mounts, tmp_path: pathlib.Path, version: int) -> None:
    """A directory too big for one readdir reply: every name once, '.' and '..' included, and
    a position taken with telldir leads to the same entries in a later, separate opendir."""
    b = ImageBuilder(version=version)
    names = [b"%04d-" % i + b"x" * 150 + bytes([0x80 + i % 100]) for i in range(1500)]
    for i, name in enumerate(names):
        if i % 3 == 0:
            b.dir(b"big/" + name)
        else:
            b.file(b"big/" + name, b"%d" % i)
    built = b.build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    big = os.fsencode(m.path / "big")
    libc = _libc()
    d = libc.opendir(big)
    assert d
    try:
        first = _read_entries(libc, d, 700)
        pos = libc.telldir(d)
        rest = _read_entries(libc, d)
    finally:
        libc.closedir(d)
    listed = [n for n, _ in first + rest]
    assert sorted(listed) == sorted(names + [b".", b".."])
    assert len(listed) == len(set(listed))
    inos = {n: i for n, i in first + rest}
    assert all(inos[n] == os.lstat(os.path.join(big, n)).st_ino for n in names[:50])
    assert os.lstat(big).st_nlink == 2 + 500
    d = libc.opendir(big)
    try:
        libc.seekdir(d, pos)
        again = _read_entries(libc, d)
    finally:
        libc.closedir(d)
    assert again == rest


def test_inode_numbers_are_stable_and_unique(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    """The numbers derive from the image alone: two mounts of it show the same ones."""
    built = rich_image(6).build(tmp_path / "img")

    def numbers(path: pathlib.Path) -> dict[str, int]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                full = os.path.join(dirpath, n)
                out[os.path.relpath(full, path)] = os.lstat(full).st_ino
        return out

    first = numbers(mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir).path)
    second = numbers(mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir).path)
    assert first == second
    assert first["hard"] == first["etc/multi"] == first["etc/hard2"]
    others = {k: v for k, v in first.items() if k not in ("hard", "etc/hard2")}
    assert len(set(others.values())) == len(others)
    assert 1 not in others.values()                  # 1 is the root's


# --- the caching contract ---------------------------------------------------------------------

def test_page_cache_is_kept_between_opens(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    """keep_cache: once read, a file's pages outlive close/open. Shown by cutting the blob
    short after the first read: a second open still reads from the kernel's cache, while a
    file never read before now fails."""
    b = ImageBuilder(version=6, chunk_size=0x4000, compressor="none")
    b.file("first", pattern(0x8000, 1))
    b.file("second", pattern(0x8000, 2))
    built = b.build(tmp_path / "img")
    mounts.expect_log(r"ERROR read: inode \d+: blob \w+ chunk \d+ at offset \d+: expected \d+ bytes, "
                      r"the file has 0 there")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--cache-size", "0")
    assert (m.path / "first").read_bytes() == pattern(0x8000, 1)
    os.truncate(built.blob_files[0], 0)
    assert (m.path / "first").read_bytes() == pattern(0x8000, 1)
    with pytest.raises(OSError) as e:
        (m.path / "second").read_bytes()
    assert e.value.errno == errno.EIO


def test_attributes_are_cached_by_the_kernel(mounts: Mounts, tmp_path: pathlib.Path) -> None:
    """Long entry/attr timeouts: repeated stats and failed lookups reach the server once."""
    built = rich_image(6).build(tmp_path / "img")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--debug")
    target = m.path / "etc" / "small"
    for _ in range(50):
        os.stat(target)
        assert not os.path.exists(m.path / "etc" / "nothing-here")
    log = m.log()
    assert log.count("lookup(") > 0
    assert log.count("b'small'") == 1, log
    assert log.count("b'nothing-here'") == 1, log
