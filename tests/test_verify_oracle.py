"""check's reference is at least as strict as create about what a tar is.

Each defect below is made in a real tar (written by stdlib tarfile) and is refused by create's
tar reader; the reference (nydusfs/check/oracle.py) must refuse it too, instead of quietly
ending the archive where tarfile stops. A mutation test then flips bytes of a tar at random:
whatever create refuses, the reference refuses.
"""

from __future__ import annotations

import io
import os
import pathlib
import tarfile
import tempfile
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mount_helpers import nydusfs

from nydusfs.check import oracle
from nydusfs.create.tarstream import TarStream
from nydusfs.errors import LayerError

DERANDOMIZE = os.environ.get("NYDUSFS_FUZZ_RANDOM") != "1"
BLOCK = 512


def good_tar(pax: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("dir")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
        tf.addfile(d)
        for name, data in (("dir/a", b"alpha" * 300), ("b", b"beta\n")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_700_000_000
            if name == "b" and pax:
                ti.pax_headers = pax
            tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def headers(raw: bytes) -> list[int]:
    """Offsets of every header block (extended ones included), as tarfile walks them."""
    out, pos = [], 0
    while pos + BLOCK <= len(raw) and any(raw[pos:pos + BLOCK]):
        out.append(pos)
        size = int(raw[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        kind = raw[pos + 156:pos + 157]
        data = size if kind in (b"0", b"\0", b"x", b"g", b"L", b"K") else 0
        pos += BLOCK + (data + BLOCK - 1) // BLOCK * BLOCK
    return out


def end_of_members(raw: bytes) -> int:
    last = headers(raw)[-1]
    size = int(raw[last + 124:last + 136].split(b"\0")[0].strip() or b"0", 8)
    return last + BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK


def set_field(raw: bytes, header: int, start: int, value: bytes, fix: bool = True) -> bytes:
    b = bytearray(raw)
    b[header + start:header + start + len(value)] = value
    if fix:
        block = b[header:header + BLOCK]
        block[148:156] = b" " * 8
        b[header + 148:header + 156] = b"%06o\0 " % sum(block)
    return bytes(b)


def pax_payload(raw: bytes, records: bytes) -> bytes:
    """The tar with the extended header of member 'b' holding exactly `records`."""
    x = next(h for h in headers(raw) if raw[h + 156:h + 157] == b"x")
    old = int(raw[x + 124:x + 136].split(b"\0")[0], 8)
    assert len(records) <= (old + BLOCK - 1) // BLOCK * BLOCK
    b = bytearray(raw)
    b[x + BLOCK:x + BLOCK + len(records)] = records
    b[x + BLOCK + len(records):x + BLOCK + (old + BLOCK - 1) // BLOCK * BLOCK] = bytes(
        (old + BLOCK - 1) // BLOCK * BLOCK - len(records))
    return set_field(bytes(b), x, 124, b"%011o\0" % len(records))


def last_header(raw: bytes) -> int:
    return headers(raw)[-1]


PAXED = {"comment": "x"}   # makes tarfile write an extended header for member 'b'

DEFECTS: dict[str, Callable[[], bytes]] = {
    "bad-checksum-before-end": lambda: set_field(good_tar(), last_header(good_tar()), 0, b"garbage", fix=False),
    "garbage-block-before-end": lambda: (
        good_tar()[:end_of_members(good_tar())] + bytes(range(256)) * 2 + bytes(1024)),
    "bad-checksum-then-garbage": lambda: (
        set_field(good_tar(), last_header(good_tar()), 0, b"zz", fix=False)[:end_of_members(good_tar())]
        + b"\x01" * 1024),
    "truncated-member-data": lambda: good_tar()[:headers(good_tar())[1] + BLOCK + 700],
    "truncated-padding": lambda: good_tar()[:end_of_members(good_tar()) - 10],
    "truncated-header": lambda: good_tar()[:last_header(good_tar()) + 300],
    "extended-header-without-member": lambda: good_tar(PAXED)[:last_header(good_tar(PAXED))],
    "non-octal-uid": lambda: set_field(good_tar(), last_header(good_tar()), 108, b"0000x77\0"),
    "non-octal-size": lambda: set_field(good_tar(), last_header(good_tar()), 124, b"0000000000z\0"),
    "negative-base256-uid": lambda: set_field(good_tar(), last_header(good_tar()), 108, b"\xff" * 8),
    "negative-base256-size": lambda: set_field(good_tar(), last_header(good_tar()), 124, b"\xff" * 12),
    "pax-length-past-newline": lambda: pax_payload(good_tar(PAXED), b"14 comment=x\n"),
    "pax-record-without-equals": lambda: pax_payload(good_tar(PAXED), b"12 commentx\n"),
    "pax-length-not-decimal": lambda: pax_payload(good_tar(PAXED), b"1x comment=x\n"),
    "pax-uid-not-decimal": lambda: pax_payload(good_tar(PAXED), b"11 uid=12a\n"),
    "pax-gid-empty": lambda: pax_payload(good_tar(PAXED), b"8 gid=\n"),
    "pax-size-not-decimal": lambda: pax_payload(good_tar(PAXED), b"11 size=0x5\n"),
    "pax-mtime-exponent": lambda: pax_payload(good_tar(PAXED), b"12 mtime=1e5\n"),
    "pax-mtime-inf": lambda: pax_payload(good_tar(PAXED), b"12 mtime=inf\n"),
    "pax-gnu-sparse": lambda: pax_payload(good_tar(PAXED), b"22 GNU.sparse.major=1\n"),
    "gnu-sparse-type": lambda: set_field(good_tar(), last_header(good_tar()), 156, b"S"),
    "unknown-type": lambda: set_field(good_tar(), last_header(good_tar()), 156, b"V"),
    "empty-name": lambda: set_field(good_tar(), last_header(good_tar()), 0, b"\0"),
    "huge-extended-header": lambda: set_field(
        good_tar(PAXED), next(h for h in headers(good_tar(PAXED)) if good_tar(PAXED)[h + 156] == ord("x")),
        124, b"%011o\0" % (65 << 20)),
}


def create_refuses(raw: bytes) -> str | None:
    """create's tar reader on `raw`: None when it reads every member, else its error."""
    try:
        stream = TarStream(io.BytesIO(raw), "layer.tar")
        for _ in stream:
            while stream.read_data(1 << 20):
                pass
    except LayerError as e:
        return str(e)
    return None


def oracle_refuses(path: pathlib.Path) -> str | None:
    try:
        oracle.read_tar(str(path), "blake3")
    except LayerError as e:
        return str(e)
    return None


def test_the_good_tar_passes_both(tmp_path: pathlib.Path) -> None:
    for raw in (good_tar(), good_tar(PAXED)):
        p = tmp_path / "good.tar"
        p.write_bytes(raw)
        assert create_refuses(raw) is None
        assert oracle_refuses(p) is None


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_reference_refuses_what_create_refuses(defect: str, tmp_path: pathlib.Path) -> None:
    raw = DEFECTS[defect]()
    assert raw not in (good_tar(), good_tar(PAXED))
    why = create_refuses(raw)
    assert why is not None, f"{defect}: create accepts it, so it is no defect"
    p = tmp_path / "layer.tar"
    p.write_bytes(raw)
    assert oracle_refuses(p) is not None, f"{defect}: create says {why!r}, the reference accepts it"


def test_check_refuses_instead_of_saying_equal(tmp_path: pathlib.Path) -> None:
    """The issue's case end to end: the image of the good layer, checked against the same layer
    whose last header is garbage right before the end-of-archive blocks."""
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    good.write_bytes(good_tar())
    bad.write_bytes(DEFECTS["bad-checksum-before-end"]())
    boot, blobs = tmp_path / "image.boot", tmp_path / "blobs"
    assert nydusfs("create", good, "--bootstrap", boot, "--blob-dir", blobs, "-q").returncode == 0
    assert nydusfs("create", bad, "--bootstrap", tmp_path / "x.boot", "--blob-dir", blobs, "-q").returncode == 2
    assert nydusfs("check", boot, "--blob-dir", blobs, "--layers", good).returncode == 0
    done = nydusfs("check", boot, "--blob-dir", blobs, "--layers", bad)
    assert done.returncode == 2, done.stdout
    assert b"checksum" in done.stderr and done.stderr.count(b"\n") == 1, done.stderr


@settings(max_examples=300, deadline=None, derandomize=DERANDOMIZE)
@given(data=st.data())
def test_mutations_create_refuses_are_refused(data: st.DataObject) -> None:
    raw = bytearray(good_tar(data.draw(st.sampled_from([None, PAXED]), label="pax")))
    spots = [h + i for h in headers(bytes(raw)) for i in range(BLOCK)]
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.sampled_from(spots), label="at")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="fix checksums"):
        for h in headers(bytes(raw)) if _walkable(bytes(raw)) else []:
            raw[:] = set_field(bytes(raw), h, 0, b"")
    cut = data.draw(st.none() | st.integers(0, len(raw)), label="cut")
    out = bytes(raw if cut is None else raw[:cut])
    why = create_refuses(out)
    if why is None:
        return
    with tempfile.TemporaryDirectory(prefix="nydusfs-tarframe-") as tmp:
        p = pathlib.Path(tmp) / "m.tar"
        p.write_bytes(out)
        assert oracle_refuses(p) is not None, f"create says {why!r}, the reference accepts it"


def _walkable(raw: bytes) -> bool:
    try:
        headers(raw)
    except ValueError:
        return False
    return True
