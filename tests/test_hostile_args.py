"""Every verb's numeric arguments (negative, huge, not numbers) and the OS refusing an output
(a directory, a missing directory, /proc, a full disk, /dev/full): one line, exit 2, no
traceback, nothing left behind. Values past what an output record holds, given on the command
line (merge --blob-sizes) or by an input bootstrap (a chunk offset), are refused the same way."""

from __future__ import annotations

import contextlib
import os
import pathlib
import struct
import subprocess
from collections.abc import Iterator

import hostile
import pytest
from conftest import needs_root
from hostile import member, one_line_error, run

from nydusfs.reader import open_image

HUGE = str(1 << 64)
DIGITS = "9" * 5000


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("args")
    layer = hostile.write(tmp / "layer.tar", member(b"f", data=b"x" * 5000))
    out = tmp / "layer.nydus"
    assert run("create", layer, "-o", out).returncode == 0
    return out


def _layer(tmp: pathlib.Path) -> pathlib.Path:
    return hostile.write(tmp / "in.tar", member(b"f", data=b"abc"))


ARGS = [
    # (verb words before the flag, flag, values)
    (["create", "{layer}", "-o", "{out}"], "--workers", ["-3", "0", "x", HUGE, DIGITS, "1.5"]),
    (["create", "{layer}", "-o", "{out}"], "--chunk-size", ["-1", "0", "0x800", HUGE, DIGITS, "zz"]),
    (["create", "{layer}", "--bootstrap", "{out}", "--blob", "{out}.blob"], "--blob-offset",
     ["-1", HUGE, DIGITS, "1e3"]),
    (["create", "{layer}", "-o", "{out}"], "--fs-version", ["4", "-6", HUGE]),
    (["check", "{image}", "--layers", "{layer}"], "--workers", ["-1", HUGE, DIGITS, "many"]),
    (["check", "{image}", "--layers", "{layer}"], "--examples", ["-1", DIGITS, "all"]),
    (["mount", "{image}", "{tmp}"], "--threads", ["0", "-2", HUGE, DIGITS]),
    (["mount", "{image}", "{tmp}"], "--cache-size", ["-1", "9" * 30 + "G", DIGITS, "1X"]),
    (["umount", "{tmp}"], "--timeout", ["nan", "inf", "-1", "0", "1e999", "soon"]),
    (["merge", "{image}", "--bootstrap", "{out}"], "--blob-sizes", ["-1", HUGE, DIGITS, "x"]),
    (["merge", "{image}", "--bootstrap", "{out}"], "--blob-toc-sizes", ["-1", str(1 << 32), DIGITS]),
    (["demo"], "--fs-version", ["7", HUGE]),
]
CASES = [(words, flag, v) for words, flag, values in ARGS for v in values]


@pytest.mark.parametrize("words,flag,value", CASES,
                         ids=[f"{w[0]}{f}={v[:12]}" for w, f, v in CASES])
def test_bad_numbers_are_usage_errors(tmp_path, image, words, flag, value):
    fill = {"layer": _layer(tmp_path), "out": tmp_path / "out", "image": image, "tmp": tmp_path}
    argv = [w.format(**fill) for w in words] + [f"{flag}={value}"]
    done = run(*argv, timeout=60)
    line = one_line_error(done, flag)
    assert len(line) < 400, line
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]


# --- outputs the OS refuses ---------------------------------------------------------------------

def test_output_is_a_directory(tmp_path, image):
    layer = _layer(tmp_path)
    (tmp_path / "d").mkdir()
    one_line_error(run("create", layer, "-o", tmp_path / "d"), "-o", "directory")
    one_line_error(run("create", layer, "--bootstrap", tmp_path / "d", "--blob", tmp_path / "b"),
                   "--bootstrap", "directory")
    one_line_error(run("merge", image, "--bootstrap", tmp_path / "d"), "--bootstrap", "directory")
    one_line_error(run("create", layer, "-o", tmp_path / "o", "--output-json", tmp_path / "d"),
                   "--output-json", "directory")
    one_line_error(run("merge", image, "--bootstrap", tmp_path / "m", "--output-json", tmp_path / "d"),
                   "--output-json", "directory")
    one_line_error(run("check", image, "--layers", layer, "--json", tmp_path / "d"), "--json")
    assert sorted(os.listdir(tmp_path)) == ["d", "in.tar"]
    assert os.listdir(tmp_path / "d") == []


def test_output_in_a_missing_directory(tmp_path, image):
    layer = _layer(tmp_path)
    gone = tmp_path / "gone" / "x"
    one_line_error(run("create", layer, "-o", gone), "-o", "does not exist")
    one_line_error(run("create", layer, "-o", tmp_path / "o", "--output-json", gone),
                   "--output-json", "does not exist")
    one_line_error(run("merge", image, "--bootstrap", tmp_path / "m", "--output-json", gone),
                   "--output-json", "does not exist")
    one_line_error(run("check", image, "--layers", layer, "--json", gone), "--json")
    mnt = tmp_path / "mnt"       # never the parent of `gone`: a pid file inside the mount
    mnt.mkdir()
    one_line_error(run("mount", image, mnt, "--log-file", gone), "--log-file", "does not exist")
    one_line_error(run("mount", image, mnt, "--pid-file", gone), "pid file", str(gone))
    mnt.rmdir()
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]


@pytest.mark.parametrize("target", ["/proc/nydusfs-out", "/proc/self/nydusfs-out", "/sys/nydusfs-out"])
def test_output_under_proc_or_sys(tmp_path, image, target):
    layer = _layer(tmp_path)
    one_line_error(run("create", layer, "-o", target), target.rsplit("/", 1)[0])
    one_line_error(run("merge", image, "--bootstrap", target), target.rsplit("/", 1)[0])
    one_line_error(run("create", layer, "-o", tmp_path / "o", "--output-json", target))
    assert not os.path.exists(target)
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]


@pytest.mark.parametrize("args", [[], ["--json"], ["--no-chunks"], ["--path", "/f"]])
def test_dump_into_a_full_device(image, args):
    with open("/dev/full", "wb") as full:
        done = subprocess.run(hostile.NYDUSFS + ["dump", str(image), *args], stdout=full,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    one_line_error(done, "standard output", "No space left on device")


@contextlib.contextmanager
def small_tmpfs(where: pathlib.Path, size: str = "256k") -> Iterator[pathlib.Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@needs_root
def test_disk_full_while_writing(tmp_path):
    big = hostile.write(tmp_path / "big.tar", member(b"big", data=os.urandom(3 << 20)))
    small = hostile.write(tmp_path / "small.tar", member(b"s", data=b"x"))
    layer = tmp_path / "small.nydus"
    assert run("create", small, "-o", layer).returncode == 0
    # a boot that does not fit: 40,000 entries
    many = hostile.write(tmp_path / "many.tar", *[member(b"d%05d" % i, b"5") for i in range(40000)])
    many_layer = tmp_path / "many.nydus"
    assert run("create", many, "-o", many_layer, "-q").returncode == 0
    with small_tmpfs(tmp_path / "full") as full:
        one_line_error(run("create", big, "-o", full / "out"), "No space left on device")
        one_line_error(run("create", big, "--bootstrap", full / "b", "--blob-dir", full),
                       "No space left on device")
        one_line_error(run("merge", many_layer, "--bootstrap", full / "m"), "No space left on device")
        assert os.listdir(full) == []


# --- values past an output record, from the command line or from an input -----------------------

def test_merge_chunk_offset_past_the_v6_chunk_index(tmp_path):
    """A v6 chunk whose uncompressed offset needs more than the 32-bit block address of the
    output's chunk index: refused naming the path, the field, the value and the limit."""
    layer = hostile.write(tmp_path / "l.tar", member(b"big", data=os.urandom(3 << 20)),
                          member(b"small", data=b"x"))
    boot = tmp_path / "l.nydus"
    assert run("create", layer, "-o", boot, "--chunk-size", "0x100000").returncode == 0
    with open_image(boot) as image:
        chunk = image.chunks(image.resolve("/big"))[1]
    raw = bytearray(boot.read_bytes())
    assert raw.count(chunk.block_id) == 1
    struct.pack_into("<Q", raw, raw.find(chunk.block_id) + 56, 1 << 45)   # uncompressed_offset
    boot.write_bytes(bytes(raw))
    out = tmp_path / "merged.boot"
    one_line_error(run("merge", boot, "--bootstrap", out), "/big", "blkaddr",
                   str((1 << 45) // 4096), str((1 << 32) - 1))
    assert not out.exists()


def test_blob_offset_past_the_blob_meta(tmp_path):
    """RAFS v6 blob meta entries hold 40-bit compressed offsets: a --blob-offset past them is
    refused, not masked; RAFS v5 has no blob meta and keeps a 64-bit offset."""
    layer = _layer(tmp_path)
    one_line_error(run("create", layer, "--bootstrap", tmp_path / "b", "--blob", tmp_path / "blob",
                       "--blob-offset", str(1 << 40)), "compressed_offset", str((1 << 40) - 1))
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]
    done = run("create", layer, "--bootstrap", tmp_path / "b", "--blob", tmp_path / "blob",
               "--blob-offset", str(1 << 40), "--fs-version", "5")
    assert done.returncode == 0, done.stderr
    with open_image(tmp_path / "b") as image:
        assert image.chunks(image.resolve("/f"))[0].compressed_offset == 1 << 40


@needs_root
def test_outputs_that_are_not_regular_files_are_never_replaced(tmp_path, image):
    """Outputs are renamed into place; a device node, a symlink or a fifo there is refused
    (before any work) rather than replaced."""
    layer = _layer(tmp_path)
    dev = tmp_path / "dev"
    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))          # a /dev/null of our own
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (dev, link, fifo):
        refused = "only a regular file is replaced"
        one_line_error(run("create", layer, "-o", target), "-o", refused)
        one_line_error(run("create", layer, "--bootstrap", target, "--blob", tmp_path / "b"),
                       "--bootstrap", refused)
        one_line_error(run("merge", image, "--bootstrap", target), "--bootstrap", refused)
        one_line_error(run("unpack", image, "-o", target), "-o", refused)
    assert os.stat(dev).st_rdev == os.makedev(1, 3) and not dev.is_symlink()
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert sorted(os.listdir(tmp_path)) == ["dev", "fifo", "in.tar", "link"]


def test_unpack_to_a_full_device(image):
    with open("/dev/full", "wb") as full:
        done = subprocess.run(hostile.NYDUSFS + ["unpack", str(image), "-o", "-"], stdout=full,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    one_line_error(done, "standard output", "No space left on device")
