"""Bad layer tars: a clear error naming the member and its offset, exit status 2, and no output
file (nor temporary file) left behind."""

from __future__ import annotations

import gzip
import io
import random
import tarfile

import pytest

import corpus
from nydusfs.cli import main


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name, size=0, kind=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def _good() -> bytes:
    return corpus.Layer().file("ok", b"fine").file("second", b"x" * 2000).tar()


def truncated_in_data() -> bytes:
    raw = _good()
    return raw[:512 * 3 + 700]        # inside the data of "second"


def bad_checksum() -> bytes:
    raw = bytearray(_good())
    raw[1024 + 5] ^= 0x20                # a name byte of the second header
    return bytes(raw)


def size_past_end() -> bytes:
    ti = _info("huge", 10)
    raw = bytearray(_tar([(ti, b"0123456789")]))
    header = tarfile.TarInfo("huge")
    header.size = 1 << 30
    raw[0:512] = header.tobuf(format=tarfile.USTAR_FORMAT)
    return bytes(raw)


def absolute_path() -> bytes:
    return _tar([(_info("/etc/passwd", 3), b"abc")])


def dotdot_path() -> bytes:
    return _tar([(_info("a/../../escape", 3), b"abc")])


def unknown_type() -> bytes:
    return _tar([(_info("weird", 0, kind=b"Z"), None)])


def gnu_sparse() -> bytes:
    ti = _info("sparse", 4)
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse",
                      "GNU.sparse.realsize": "1048576"}
    return _tar([(ti, b"data")])


def pax_bad_record() -> bytes:
    payload = b"99 path=short\n"            # the length says 99, the record has 14 bytes
    hdr = _info("././@PaxHeader", len(payload), kind=tarfile.XHDTYPE)
    raw = hdr.tobuf(format=tarfile.USTAR_FORMAT) + payload + bytes(512 - len(payload))
    return raw + _info("f", 0).tobuf(format=tarfile.USTAR_FORMAT) + bytes(1024)


def pax_mtime_with_newline() -> bytes:
    ti = _info("f", 0)
    ti.pax_headers = {"mtime": "12\n34"}
    return _tar([(ti, None)])


def hardlink_to_directory() -> bytes:
    return _tar([(_info("d", 0, kind=tarfile.DIRTYPE), None),
                 (_info("link", 0, kind=tarfile.LNKTYPE, linkname="d"), None)])


def garbage() -> bytes:
    # fixed bytes: random ones start with a compression magic one run in 65536
    return b"G" + random.Random(4096).randbytes(4095)


def corrupt_gzip() -> bytes:
    raw = bytearray(gzip.compress(_good()))
    raw[40:60] = bytes(20)
    return bytes(raw)


CASES = {
    truncated_in_data: ("truncated", "second"),
    bad_checksum: ("checksum", "offset 1024"),
    size_past_end: ("truncated", "huge"),
    absolute_path: ("absolute", "/etc/passwd"),
    dotdot_path: ("'..'", "escape"),
    unknown_type: ("type", "weird"),
    gnu_sparse: ("sparse", "sparse"),
    pax_bad_record: ("PAX", "offset 0"),
    pax_mtime_with_newline: ("mtime", "'f'"),
    hardlink_to_directory: ("hard link to directory", "link"),
    garbage: ("checksum", "offset 0"),
    corrupt_gzip: ("stream", "offset"),
}


@pytest.mark.parametrize("make", list(CASES), ids=[f.__name__ for f in CASES])
@pytest.mark.parametrize("kind", ["layer", "separate"])
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, capsys, make, kind):
    src = tmp_path / "in" / "layer.tar"
    src.parent.mkdir()
    src.write_bytes(make())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if kind == "layer":
        args = ["create", str(src), "-o", str(out_dir / "layer.nydus")]
    else:
        args = ["create", str(src), "--bootstrap", str(out_dir / "b.boot"), "--blob-dir", str(out_dir)]
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("nydusfs create: error: ") and "Traceback" not in err
    assert str(src) in err
    for text in CASES[make]:
        assert text in err, err
    assert list(out_dir.iterdir()) == []


def test_empty_file_is_not_a_layer(tmp_path, capsys):
    src = tmp_path / "empty.tar"
    src.write_bytes(b"")
    assert main(["create", str(src), "-o", str(tmp_path / "o")]) == 2
    assert "empty file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_source(tmp_path, capsys):
    assert main(["create", str(tmp_path / "nope.tar"), "-o", str(tmp_path / "o")]) == 2
    assert "cannot open" in capsys.readouterr().err


@pytest.mark.parametrize("args, text", [
    (["-o", "x", "--bootstrap", "y"], "either -o"),
    (["--bootstrap", "y"], "--blob"),
    (["--chunk-size", "0x1234"], "power of two"),
    (["-o", "x", "--layout", "B", "--blob-offset", "512"], "offset 0"),
])
def test_usage_errors(tmp_path, capsys, args, text):
    src = corpus.Layer().file("f", b"1").write(tmp_path / "l.tar")
    assert main(["create", str(src)] + args) == 2
    assert text in capsys.readouterr().err
