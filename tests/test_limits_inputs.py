"""Small hostile inputs cost bounded memory and time (docs/limits.md), class by class:
bootstraps inflated past a limit, counts declared by blob meta, compressed layers that end
early, FIFOs and other non-regular files given as inputs, and paths inside a mountpoint.

Every CLI run happens in a child process under an address-space ceiling and a time limit
(tests/bounded.py) and must exit 2 with one line naming the problem.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import random
import tarfile
import tracemalloc

import pytest
import zstandard
from bounded import MEMORY_CEILING, assert_clean, assert_error, run
from conftest import needs_root
from corpus import Layer, pattern
from mount_helpers import ImageBuilder, is_ours_mounted

from nydusfs.format import blob
from nydusfs.format.v6 import V6BlobEntry
from nydusfs.reader import open_image
from nydusfs.reader.blobs import BlobStore
from nydusfs.reader.model import BlobInfo
from nydusfs.util.limits import DEFAULT_MAX_BOOTSTRAP, open_regular
from nydusfs.util.streams import ZstdFrames, open_decompressed
from nydusfs.write.blobfile import meta_header, toc_entry

GIB = 1 << 30


def small_image(tmp_path, version: int = 6):
    b = ImageBuilder(version=version)
    b.file("/a", pattern(5000))
    b.dir("/d")
    b.file("/d/b", b"hello")
    return b.build(tmp_path / f"img{version}")


# --- bootstraps inflated into memory ----------------------------------------------------------

def tarball_claiming(size: int) -> bytes:
    """A gzip tarball whose image/image.boot header claims `size` bytes (3 MB of real zeros)."""
    info = tarfile.TarInfo("image/image.boot")
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return gzip.compress(header + bytes(3 << 20), 9)


def toc_layer_claiming(tmp_path, usize: int) -> str:
    """A layout-B layer whose ToC says image.boot is a zstd frame inflating to `usize` bytes
    (the frame really does: zeros compress ~30000:1)."""
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(usize)) if usize <= 64 << 20 else \
        _big_zero_frame(usize)
    body = frame + blob.blob_tar_header(b"image.boot", len(frame))
    toc = toc_entry(b"image.boot", blob.TOC_FLAGS["zstd"], bytes(32), 0, len(frame), usize)
    path = tmp_path / "claims.layer"
    path.write_bytes(body + toc + blob.blob_tar_header(b"rafs.blob.toc", len(toc)))
    return str(path)


def _big_zero_frame(usize: int) -> bytes:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, size=usize, closefd=False) as w:
        chunk = bytes(16 << 20)
        left = usize
        while left:
            w.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return out.getvalue()


@pytest.mark.parametrize("verb", ["dump", "merge", "check", "mount"])
def test_tarball_claiming_3_gib_is_refused_before_reading(tmp_path, verb):
    boot = tmp_path / "claims.tar.gz"
    boot.write_bytes(tarball_claiming(3 * GIB))
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("f", b"x").tar())
    args = {"dump": ["dump", boot], "merge": ["merge", boot, "--bootstrap", tmp_path / "out.boot"],
            "check": ["check", boot, "--layers", layer],
            "mount": ["mount", boot, tmp_path / "mnt"]}[verb]
    (tmp_path / "mnt").mkdir()
    line = assert_error(run(*args, ceiling=512 << 20), "image/image.boot", str(3 * GIB),
                        "NYDUSFS_MAX_BOOTSTRAP")
    assert str(boot) in line
    assert not (tmp_path / "out.boot").exists()


def test_toc_section_inflating_to_1_gib_is_refused_before_inflating(tmp_path):
    path = toc_layer_claiming(tmp_path, GIB)
    assert os.path.getsize(path) < 200_000
    line = assert_error(run("dump", path, ceiling=512 << 20), "image.boot", "uncompressed_size",
                        str(GIB))
    assert path in line


def test_the_limit_is_configurable(tmp_path):
    b = ImageBuilder()
    b.file("/f", b"data")
    built = b.build(tmp_path / "img")
    raw = built.bootstrap.read_bytes()
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("image/image.boot")
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
    boot = tmp_path / "boot.tar.gz"
    boot.write_bytes(gzip.compress(tar.getvalue()))
    assert_clean(run("dump", boot), (0,))
    small = run("dump", boot, env={"NYDUSFS_MAX_BOOTSTRAP": str(len(raw) - 1)})
    assert_error(small, f"at most {len(raw) - 1} bytes", str(len(raw)))
    assert_clean(run("dump", boot, env={"NYDUSFS_MAX_BOOTSTRAP": "1M"}), (0,))
    assert_error(run("dump", boot, env={"NYDUSFS_MAX_BOOTSTRAP": "lots"}), "NYDUSFS_MAX_BOOTSTRAP",
                 "not a size")


def test_toc_section_within_the_limit_still_loads(tmp_path):
    """A compressed ToC image.boot that honestly inflates is read (the limit is not a ban)."""
    b = ImageBuilder()
    b.file("/f", b"data")
    raw = b.build(tmp_path / "img").bootstrap.read_bytes()
    frame = zstandard.ZstdCompressor().compress(raw)
    toc = toc_entry(b"image.boot", blob.TOC_FLAGS["zstd"], bytes(32), 0, len(frame), len(raw))
    path = tmp_path / "ok.layer"
    path.write_bytes(frame + blob.blob_tar_header(b"image.boot", len(frame)) + toc
                     + blob.blob_tar_header(b"rafs.blob.toc", len(toc)))
    with open_image(path) as im:
        assert [p for p, _ in im.walk()] == [b"/", b"/f"]
    assert DEFAULT_MAX_BOOTSTRAP == 512 << 20


# --- counts declared by blob meta ----------------------------------------------------------------

def test_blob_meta_declaring_16m_chunks_in_8_kb_is_refused_without_allocating(tmp_path):
    entries = 16 << 20
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(entries * 16))
    assert len(frame) < 16 << 10
    header = meta_header(0, 3, entries, 0, len(frame), entries * 16)
    path = tmp_path / "blob"
    path.write_bytes(frame + header)
    e = V6BlobEntry.decode(bytes(V6BlobEntry.SIZE)).replace(
        chunk_count=entries, compression_algo=3, ci_compressor=3, ci_offset=0,
        ci_compressed_size=len(frame), ci_uncompressed_size=entries * 16)
    info = BlobInfo(index=0, blob_id="blob", raw_id="blob", compressor="zstd", digester="blake3",
                    chunk_size=1 << 20, chunk_count=entries, compressed_size=len(frame),
                    uncompressed_size=0, features=0, v6=e)
    store = BlobStore([info], [tmp_path])
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as err:
            store._load_ci_table(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "declares more than" in str(err.value) and str(os.path.getsize(path)) in str(err.value)
    assert peak < 1 << 20
    assert store.ci_entry(0, 5) is None     # the resolver sees "no entry", not a crash
    store.close()


def test_blob_meta_entries_are_decoded_on_demand(tmp_path):
    """An honest blob meta of N entries keeps its bytes, not N objects."""
    n = 1000
    raw = b"".join(blob.encode_ci_v1(i * 10, 10, i * 4096, 4096) for i in range(n))
    path = tmp_path / "blob"
    path.write_bytes(bytes(n * 10) + raw + meta_header(0, 0, n, n * 10, len(raw), len(raw)))
    e = V6BlobEntry.decode(bytes(V6BlobEntry.SIZE)).replace(
        chunk_count=n, ci_offset=n * 10, ci_compressed_size=len(raw), ci_uncompressed_size=len(raw))
    info = BlobInfo(index=0, blob_id="blob", raw_id="blob", compressor="none", digester="blake3",
                    chunk_size=4096, chunk_count=n, compressed_size=n * 10,
                    uncompressed_size=n * 4096, features=0, v6=e)
    store = BlobStore([info], [tmp_path])
    c = store.ci_entry(0, 777)
    assert (c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size) == \
        (7770, 10, 777 * 4096, 4096)
    assert store.ci_entry(0, n) is None and store.ci_entry(0, -1) is None
    store.close()


# --- compressed layers that end early -------------------------------------------------------------

def layer_400() -> bytes:
    rnd = random.Random(4)
    layer = Layer()
    for i in range(400):
        layer.file(f"f{i:03d}", rnd.randbytes(1000))
    return layer.tar()


@pytest.mark.parametrize("cut", ["half", "magic", "last-byte"])
@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_truncated_compressed_layer_is_an_error_in_create_and_check(tmp_path, cut, codec):
    raw = layer_400()
    packed = zstandard.ZstdCompressor().compress(raw) if codec == "zstd" else gzip.compress(raw)
    size = {"half": len(packed) // 2, "magic": 4 if codec == "zstd" else 2,
            "last-byte": len(packed) - 1}[cut]
    bad = tmp_path / f"bad.tar.{codec}"
    bad.write_bytes(packed[:size])
    assert_error(run("create", bad, "-o", tmp_path / "out.nydus"), str(bad))
    assert not (tmp_path / "out.nydus").exists()
    (tmp_path / "good.tar").write_bytes(raw)
    good = tmp_path / "good.nydus"
    assert_clean(run("create", tmp_path / "good.tar", "-o", good), (0,))
    assert_clean(run("check", good, "--layers", tmp_path / "good.tar"), (0,))
    assert_error(run("check", good, "--layers", bad), str(bad))


def test_zstd_frames_split_anywhere_are_followed():
    """The frame follower agrees with the codec on complete streams fed in any pieces, with
    skippable frames, checksums and several frames."""
    rnd = random.Random(7)
    data = pattern(300_000) + rnd.randbytes(50_000)
    frames = (zstandard.ZstdCompressor(write_checksum=True).compress(data)
              + (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"skip!"
              + zstandard.ZstdCompressor(level=1, write_content_size=False).compress(b"tail"))
    for _ in range(20):
        f = ZstdFrames()
        pos = 0
        while pos < len(frames):
            step = rnd.randint(1, 5000)
            f.feed(frames[pos:pos + step])
            pos += step
        assert f.complete and f.frames == 3
    assert open_decompressed(io.BytesIO(frames)).read() == data + b"tail"
    for cut in range(4, len(frames), 997):  # shorter is no zstd magic: read as is
        with pytest.raises(EOFError):
            open_decompressed(io.BytesIO(frames[:cut])).read()


# --- FIFOs and other non-regular inputs ------------------------------------------------------------

def test_open_regular_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(Exception) as e:
        open_regular(fifo, "a layer")
    assert "FIFO" in str(e.value)
    with pytest.raises(Exception) as e:
        open_regular(tmp_path, "a layer")
    assert "directory" in str(e.value)


def test_a_fifo_in_every_verb_is_refused(tmp_path):
    built = small_image(tmp_path)
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("a", b"x").tar())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        ["dump", fifo], ["dump", "--verify", fifo],
        ["check", fifo, "--layers", layer], ["check", built.bootstrap, "--layers", fifo],
        ["create", fifo, "-o", tmp_path / "o1"],
        ["create", layer, "-o", tmp_path / "o2", "--chunk-dict", f"bootstrap={fifo}"],
        ["merge", fifo, "--bootstrap", tmp_path / "o3"],
        ["merge", built.bootstrap, "--bootstrap", tmp_path / "o4", "--chunk-dict", f"bootstrap={fifo}"],
        ["merge", built.bootstrap, "--bootstrap", tmp_path / "o5", "--parent-bootstrap", fifo],
        ["mount", fifo, mnt],
    ]
    for args in cases:
        line = assert_error(run(*args, timeout=30), "FIFO")
        assert str(fifo) in line, line
    assert not is_ours_mounted(mnt)
    for name in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / name).exists()


def test_a_fifo_named_like_a_blob_is_never_opened(tmp_path):
    built = small_image(tmp_path)
    blobs = tmp_path / "fifo-blobs"
    blobs.mkdir()
    with open_image(built.bootstrap) as im:
        ids = [b.blob_id for b in im.blobs]
    for blob_id in ids:
        os.mkfifo(blobs / blob_id)
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("a", pattern(5000)).dir("d").file("d/b", b"hello").tar())
    proc = run("check", built.bootstrap, "--blob-dir", blobs, "--layers", layer, timeout=30)
    assert_clean(proc, (1,))    # content unreadable: a difference, after no wait
    assert "FIFO" in proc.stdout.decode() + proc.stderr.decode() or proc.returncode == 1
    proc = run("dump", "--verify", built.bootstrap, "--blob-dir", blobs, timeout=30)
    assert_clean(proc, (1, 2))


# --- paths inside the mountpoint -------------------------------------------------------------------

@needs_root
def test_mount_refuses_paths_inside_its_mountpoint(tmp_path):
    built = small_image(tmp_path)
    mnt = tmp_path / "mnt"
    (mnt / "sub").mkdir(parents=True)
    link = tmp_path / "link-into-mnt"
    link.symlink_to(mnt / "sub")
    cases = [
        ["--blob-dir", mnt], ["--blob-dir", mnt / "sub"], ["--blob-dir", link],
        ["--log-file", mnt / "log"], ["--pid-file", mnt / "sub" / "pid"],
    ]
    for extra in cases:
        line = assert_error(run("mount", built.bootstrap, mnt, *extra, timeout=30),
                            "inside the mountpoint")
        assert not is_ours_mounted(mnt), line
    (mnt / "image.boot").write_bytes(built.bootstrap.read_bytes())
    assert_error(run("mount", mnt / "image.boot", mnt, timeout=30), "BOOTSTRAP", "inside the mountpoint")
    assert not is_ours_mounted(mnt)


def test_memory_ceiling_is_what_the_docs_state():
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs" / "limits.md"
    text = docs.read_text(encoding="utf-8")
    assert f"{MEMORY_CEILING >> 20} MiB" in text
