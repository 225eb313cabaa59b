"""create (and check's reference) on tar fields RAFS cannot hold: refused with one line naming
the member, the field, the value and the limit (never a traceback, never truncated), except a
date before 1970, which converts as 0 with one warning per layer, in create and check alike."""

from __future__ import annotations

import io
import os
import pathlib
import tarfile

import hostile
import pytest
from hostile import member, one_line_error, run

from nydusfs.reader import open_image

U32 = 1 << 32
U64 = 1 << 64

# (id, members, words the error line must hold)
REFUSED = [
    ("uid-pax-2^32", [member(b"f", data=b"x", pax={b"uid": str(U32).encode()})],
     ["'f'", "PAX uid", str(U32), str(U32 - 1)]),
    ("gid-pax-2^40", [member(b"f", data=b"x", pax={b"gid": str(1 << 40).encode()})],
     ["'f'", "PAX gid", str(1 << 40), str(U32 - 1)]),
    ("uid-base256-2^32", [member(b"f", data=b"x", uid=U32)],
     ["'f'", "header field uid", str(U32), str(U32 - 1)]),
    ("gid-base256-2^60", [member(b"f", data=b"x", gid=1 << 60)],
     ["'f'", "header field gid", str(1 << 60)]),
    ("uid-5000-digits", [member(b"f", data=b"x", pax={b"uid": b"7" * 5000})],
     ["'f'", "PAX uid", "5000-digit", str(U32 - 1)]),
    ("mtime-pax-2^64", [member(b"f", data=b"x", pax={b"mtime": str(U64).encode()})],
     ["'f'", "PAX mtime", str(U64), str(U64 - 1)]),
    ("mtime-pax-2^64-frac", [member(b"f", data=b"x", pax={b"mtime": str(U64).encode() + b".5"})],
     ["'f'", "PAX mtime", str(U64)]),
    ("mtime-9000-digits", [member(b"f", data=b"x", pax={b"mtime": b"9" * 9000})],
     ["'f'", "PAX mtime", "9000-digit", str(U64 - 1)]),
    ("mtime-base256-2^70", [member(b"f", data=b"x", mtime=1 << 70)],
     ["'f'", "header field mtime", str(1 << 70), str(U64 - 1)]),
    ("size-pax-40-digits", [member(b"d", b"5", pax={b"size": b"9" * 40})],
     ["'d'", "PAX size", "40-digit"]),
    ("devmajor-base256-huge", [member(b"dev", b"3", devmajor=1 << 62)],
     ["'dev'", "devmajor", str(1 << 62), "4095"]),
    ("devmajor-4096", [member(b"dev", b"4", devmajor=4096, devminor=1)],
     ["'dev'", "devmajor", "4096", "4095"]),
    ("devminor-2^20", [member(b"dev", b"3", devmajor=1, devminor=1 << 20)],
     ["'dev'", "devminor", str(1 << 20), str((1 << 20) - 1)]),
    ("pax-path-nul", [member(b"f", data=b"x", pax={b"path": b"etc/pass\0wd"})],
     ["etc/pass\\x00wd", "PAX path", "NUL"]),
    ("pax-linkpath-nul-symlink", [member(b"s", b"2", pax={b"linkpath": b"a\0b"})],
     ["'s'", "PAX linkpath", "NUL"]),
    ("pax-linkpath-nul-hardlink", [member(b"f", data=b"x"), member(b"h", b"1", pax={b"linkpath": b"f\0x"})],
     ["'h'", "PAX linkpath", "NUL"]),
    ("xattr-name-nul", [member(b"f", data=b"x", pax={b"SCHILY.xattr.user.a\0b": b"v"})],
     ["'f'", "xattr name", "NUL"]),
]


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_field_past_its_limit_is_one_line(tmp_path, version, case):
    _id, members, words = case
    layer = hostile.write(tmp_path / "layer.tar", member(b"ok", data=b"fine"), *members)
    out = tmp_path / "out" / "layer.nydus"
    out.parent.mkdir()
    done = run("create", layer, "-o", out, "--fs-version", version)
    one_line_error(done, str(layer), *words)
    assert os.listdir(out.parent) == []           # nothing written, no temporary left


BOUNDARY = [
    member(b"ids", data=b"x", pax={b"uid": str(U32 - 1).encode(), b"gid": str(U32 - 1).encode()}),
    member(b"late", data=b"y", pax={b"mtime": str(U64 - 1).encode() + b".999999999"}),
    member(b"dev", b"3", devmajor=4095, devminor=(1 << 20) - 1),
    member(b"b256", data=b"z", uid=(1 << 31) + 5, gid=U32 - 2),
]


@pytest.mark.parametrize("version", [5, 6])
def test_values_at_the_limit_are_kept_exactly(tmp_path, version):
    layer = hostile.write(tmp_path / "layer.tar", *BOUNDARY)
    out = tmp_path / "layer.nydus"
    done = run("create", layer, "-o", out, "--fs-version", version)
    assert done.returncode == 0, done.stderr
    with open_image(out) as image:
        ids = image.inode(image.resolve("/ids"))
        assert (ids.uid, ids.gid) == (U32 - 1, U32 - 1)
        late = image.inode(image.resolve("/late"))
        assert (late.mtime, late.mtime_nsec) == (U64 - 1, 999_999_999)
        dev = image.inode(image.resolve("/dev"))
        assert (os.major(dev.rdev), os.minor(dev.rdev)) == (4095, (1 << 20) - 1)
        b256 = image.inode(image.resolve("/b256"))
        assert (b256.uid, b256.gid) == ((1 << 31) + 5, U32 - 2)


def test_symlink_target_longer_than_v5_holds(tmp_path):
    target = b"t/" * 40000                         # 80,000 bytes: past v5's 16-bit length
    layer = hostile.write(tmp_path / "layer.tar", member(b"ok", data=b"x"),
                          member(b"long", b"2", pax={b"linkpath": target}))
    v5 = tmp_path / "v5.nydus"
    one_line_error(run("create", layer, "-o", v5, "--fs-version", 5),
                   "/long", "i_symlink_size", "80000", "65535")
    assert not v5.exists()
    v6 = tmp_path / "v6.nydus"
    done = run("create", layer, "-o", v6, "--fs-version", 6)
    assert done.returncode == 0, done.stderr
    with open_image(v6) as image:
        assert image.readlink(image.resolve("/long")) == target


# --- dates before 1970 ---------------------------------------------------------------------

def _before_1970_layer(path: pathlib.Path) -> pathlib.Path:
    """Written by the stdlib: GNU format puts negative mtimes in base-256 header fields, PAX
    format in `mtime` records with a fraction."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, mtime in (("gnu-old", -86400 * 365), ("gnu-new", 1_600_000_000)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = 3, mtime
            tf.addfile(ti, io.BytesIO(b"abc"))
        end = tf.offset                            # before the end-of-archive blocks
    gnu = buf.getvalue()[:end]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mtime in (("pax-old", "-100.25"), ("pax-dir", "-1")):
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE if name == "pax-dir" else tarfile.REGTYPE
            ti.pax_headers = {"mtime": mtime}
            tf.addfile(ti, io.BytesIO(b""))
    path.write_bytes(gnu + buf.getvalue())
    return path


@pytest.mark.parametrize("version", [5, 6])
def test_dates_before_1970_are_stored_as_0_with_one_warning(tmp_path, version):
    layer = _before_1970_layer(tmp_path / "old.tar")
    out = tmp_path / "old.nydus"
    done = run("create", layer, "-o", out, "--fs-version", version)
    assert done.returncode == 0, done.stderr
    lines = hostile.stderr_lines(done)
    assert len(lines) == 1 and "before 1970" in lines[0] and "'gnu-old'" in lines[0], lines
    with open_image(out) as image:
        for path in ("/gnu-old", "/pax-old", "/pax-dir"):
            n = image.inode(image.resolve(path))
            assert (n.mtime, n.mtime_nsec) == (0, 0), path
        assert image.inode(image.resolve("/gnu-new")).mtime == 1_600_000_000
    # check's reference applies the same rule: the image equals its layer
    done = run("check", out, "--layers", layer)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert b"equal" in done.stdout


@pytest.mark.parametrize("mtime", [b"inf", b"-inf", b"nan", b"sNaN", b"1e999999999",
                                   str(U64).encode(), b"9" * 6000])
def test_check_reference_refuses_times_rafs_cannot_hold(tmp_path, mtime):
    good = hostile.write(tmp_path / "good.tar", member(b"f", data=b"x"))
    image = tmp_path / "good.nydus"
    assert run("create", good, "-o", image).returncode == 0
    bad = hostile.write(tmp_path / "bad.tar", member(b"f", data=b"x", pax={b"mtime": mtime}))
    done = run("check", image, "--layers", bad, timeout=60)
    # refused by the reference's tar framing (not a decimal number) or by the range rule
    one_line_error(done, str(bad), "mtime")


def test_check_reference_stores_negative_times_as_0(tmp_path):
    layer = hostile.write(tmp_path / "l.tar",
                          member(b"f", data=b"x", pax={b"mtime": b"-1000000000"}),
                          member(b"g", data=b"y", pax={b"mtime": b"-0.5"}),
                          member(b"h", data=b"z", mtime=b"\xff" * 12))      # base-256 -1
    image = tmp_path / "l.nydus"
    assert run("create", layer, "-o", image, "-q").returncode == 0
    done = run("check", image, "--layers", layer, "--json", "-")
    assert done.returncode == 0, done.stdout
    # and a layer whose times differ only before 1970 is equal too: both are 0
    other = hostile.write(tmp_path / "o.tar",
                          member(b"f", data=b"x", pax={b"mtime": b"-5"}),
                          member(b"g", data=b"y", pax={b"mtime": b"-7.25"}),
                          member(b"h", data=b"z", pax={b"mtime": b"-9"}))
    assert run("check", image, "--layers", other).returncode == 0
