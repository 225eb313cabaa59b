"""Inputs that are not what they claim to be: create's SOURCE as something other than a
readable regular file, and a layout-A blob past what its tar header can say.

Each run is bounded in memory and time (tests/bounded.py) and must exit 2 with one line that
names the file, leaving no output behind.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tarfile

import pytest
from bounded import BASE_ENV, MEMORY_CEILING, _limit, assert_error, run
from conftest import needs_root
from corpus import Layer, pattern

from nydusfs.format.layer import LAYOUT_A_MAX_BLOB


def assert_no_output(tmp_path: pathlib.Path) -> None:
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


@pytest.fixture
def outdir(tmp_path):
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev-zero", "proc-self-mem"])
def test_create_names_a_source_that_is_not_a_readable_file(tmp_path, outdir, kind):
    if kind == "directory":
        src, words = tmp_path, ["directory"]
    elif kind == "fifo":
        src = tmp_path / "fifo"
        os.mkfifo(src)
        words = ["FIFO"]
    elif kind == "dev-zero":
        src, words = pathlib.Path("/dev/zero"), ["character device"]
    else:   # a regular file to fstat, whose read fails at once with EIO
        src, words = pathlib.Path("/proc/self/mem"), ["offset 0", "Input/output error"]
    line = assert_error(run("create", src, "-o", outdir / "layer.nydus", timeout=60), str(src), *words)
    assert line.startswith("nydusfs create: error: "), line
    assert_no_output(tmp_path)


def test_create_from_an_endless_stream_of_zeros_stops(tmp_path, outdir):
    """All zeros is an empty tar (end-of-archive blocks, then padding); the padding that is
    read out after them is bounded, so /dev/zero on stdin ends with an error, not a hang."""
    argv = [sys.executable, "-m", "nydusfs", "create", "-", "-o", str(outdir / "layer.nydus")]
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(argv, stdin=zero, capture_output=True, timeout=120, check=False,
                              env=dict(os.environ) | BASE_ENV, preexec_fn=_limit(MEMORY_CEILING))
    assert_error(proc, "- at offset 0", "MiB follow the end-of-archive marker")
    assert_no_output(tmp_path)
    # a bounded run of zeros is an empty layer, as tar says
    proc = subprocess.run(argv, input=bytes(1 << 20), capture_output=True, timeout=120, check=False,
                          env=dict(os.environ) | BASE_ENV)
    assert proc.returncode == 0, proc.stderr


@needs_root
def test_create_names_a_source_that_fails_mid_read(tmp_path, outdir, mounts):
    """A layer served by a FUSE mount whose second chunk does not match its digest: the read
    fails with EIO after the first MiB, and create names the file and the offset."""
    inner = Layer()
    for i in range(6):
        inner.file(f"f{i}", pattern(400_000, seed=i))
    outer = tmp_path / "outer.tar"
    outer.write_bytes(Layer().file("layer.tar", inner.tar()).tar())
    boot, blobs = tmp_path / "outer.boot", tmp_path / "blobs"
    assert run("create", outer, "--bootstrap", boot, "--blob-dir", blobs, "--compressor", "none",
               timeout=120).returncode == 0
    [blob] = list(blobs.iterdir())
    raw = bytearray(blob.read_bytes())
    raw[(1 << 20) + 100] ^= 0xFF             # inside the second 1 MiB chunk
    blob.write_bytes(raw)
    mounts.expect_log(r"digest")
    m = mounts.mount(boot, "--blob-dir", blobs)
    src = m.path / "layer.tar"
    with open(src, "rb") as f:
        assert len(f.read(1 << 20)) == 1 << 20
        with pytest.raises(OSError):
            f.read(1 << 20)
    line = assert_error(run("create", src, "-o", outdir / "layer.nydus", timeout=120), str(src),
                        "cannot read: Input/output error")
    assert "offset" in line
    assert_no_output(tmp_path)


# --- layout A: the blob's size is an 11-digit USTAR field ----------------------------------------

def layout_a(tmp_path: pathlib.Path, blob_size: int, fmt: int) -> pathlib.Path:
    """A layout-A layer whose image/image.blob header claims `blob_size` bytes (a sparse
    file: the blob is a hole), followed by a real bootstrap."""
    src = tmp_path / "src.tar"
    src.write_bytes(Layer().file("f", b"hello").tar())
    small = tmp_path / "small.nydus"
    assert run("create", src, "-o", small).returncode == 0
    with tarfile.open(small) as tf:
        member = tf.extractfile("image/image.boot")
        assert member is not None
        boot = member.read()
    out = tmp_path / "big.nydus"
    with open(out, "wb") as f:
        d = tarfile.TarInfo("image")
        d.type = tarfile.DIRTYPE
        f.write(d.tobuf(tarfile.USTAR_FORMAT))
        b = tarfile.TarInfo("image/image.blob")
        b.size = blob_size
        f.write(b.tobuf(fmt))
        f.seek(f.tell() + blob_size + (-blob_size % 512))
        t = tarfile.TarInfo("image/image.boot")
        t.size = len(boot)
        f.write(t.tobuf(tarfile.USTAR_FORMAT) + boot + bytes(-len(boot) % 512) + bytes(1024))
    return out


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["base256", "pax"])
def test_a_layout_a_blob_of_8_gib_is_refused_in_every_verb(tmp_path, fmt):
    big = layout_a(tmp_path, LAYOUT_A_MAX_BLOB + 1, fmt)
    assert os.stat(big).st_blocks * 512 < 1 << 20          # sparse: nothing was written
    layer = tmp_path / "src.tar"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args in (["dump", "--json", big], ["dump", "--verify", big], ["check", big, "--layers", layer],
                 ["merge", big, "--bootstrap", tmp_path / "m.boot"], ["mount", big, mnt]):
        assert_error(run(*args, timeout=60), str(big), "layout A tar member image/image.blob",
                     "field size", str(LAYOUT_A_MAX_BLOB + 1), str(LAYOUT_A_MAX_BLOB))
    assert not (tmp_path / "m.boot").exists()
    assert not os.path.ismount(mnt)
