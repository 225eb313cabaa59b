"""Bad input never escapes as anything but a NydusfsError, and never hangs.

Truncated, zeroed and randomly mutated fixtures (and blobs) are opened with `open_image`, then
walked, read and dumped completely. Format errors must name the file; each example runs under
an alarm so that a loop in the reader fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import tarfile
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES, fixture_path
from nydusfs import dump as model
from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6
from nydusfs.errors import FormatError, NydusfsError
from nydusfs.format import blob
from nydusfs.reader import open_image
from nydusfs.reader.regions import regions

import test_format_roundtrip as writer_trees

ALARM_SECONDS = 30
# CI runs the same cases every time; NYDUSFS_FUZZ_RANDOM=1 explores new ones
DERANDOMIZE = os.environ.get("NYDUSFS_FUZZ_RANDOM") != "1"
INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0xFFFF, 0x10000,
               0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no result after {ALARM_SECONDS} s")


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="nydusfs-robust-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def writer_images(workdir: str) -> dict[str, bytes]:
    """Small bootstraps with what the fixtures lack: xattrs, devices, multi-block dirs, links."""
    out = {}
    for version, writer in ((5, write_v5), (6, write_v6)):
        tree = writer_trees.random_tree(random.Random(version), 40, 2, cross_dir_links=version == 6)
        out[f"writer-v{version}"] = writer(tree)[0]
    # the same v5 bootstrap in the two Nydus layer layouts, with some chunk data
    data = random.Random(0).randbytes(6000)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, payload in (("image/image.blob", data), ("image/image.boot", out["writer-v5"])):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    out["layout-a"] = tar.getvalue()
    out["layout-b"] = (data + blob.blob_tar_header(b"image.blob", len(data)) + out["writer-v5"]
                       + blob.blob_tar_header(b"image.boot", len(out["writer-v5"])))
    return out


def exercise(path: str, blob_dirs: list, full: bool = True) -> None:
    """Everything a consumer may do with an image: dump it, walk it, read and verify it."""
    with open_image(path, blob_dirs) as im:
        model.header(im)
        for p, ino in im.walk():
            if full:
                model.inode(im, p, ino)
            else:
                im.xattrs(ino)
                node = im.inode(ino)
                if node.is_reg:
                    im.chunks(ino)
                elif node.is_symlink:
                    im.readlink(ino)
            node = im.inode(ino)
            if node.is_dir:
                for name, _child in im.readdir(ino)[:2]:
                    im.lookup(ino, name)
            if full and node.is_reg and blob_dirs:
                im.read(ino, 0, 1 << 16)
                for c in im.chunks(ino)[:3]:
                    im.read(ino, c.file_offset, 4096, verify=False)
        if blob_dirs:
            list(model.verify(im))


def run_guarded(path: str, blob_dirs: list, full: bool = True) -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_SECONDS)
    try:
        exercise(path, blob_dirs, full)
    except FormatError as e:
        # file, structure, field or offset, and what was expected
        assert path in str(e), f"format error without the file name: {e}"
        assert e.structure and e.expected is not None, e
        assert e.field is not None or e.offset is not None, e
    except NydusfsError:
        pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def mutations(spans: list[tuple[int, int]]) -> st.SearchStrategy:
    """Up to three edits: truncate, zero a range, random bytes, or an interesting integer
    written into a decoded structure (`spans` from `regions`). Positions come from a seeded
    generator: hypothesis' own integers favour small values, which would mostly hit the
    first kilobyte (the v6 zero pad, the v5 superblock) and test little else."""
    kinds = ["truncate", "zero", "bytes"] + (["field"] * 3 if spans else [])
    value = st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1))
    edit = st.tuples(st.sampled_from(kinds), st.integers(0, (1 << 64) - 1), value)
    return st.lists(edit, min_size=1, max_size=3)


def apply(raw: bytes, edits, spans: list[tuple[int, int]]) -> bytes:
    data = bytearray(raw)
    for kind, seed, value in edits:
        rng = random.Random(seed)
        size = len(data)
        if kind == "truncate":
            del data[rng.randrange(1, size):]
        elif kind == "zero":
            at = rng.randrange(size)
            length = rng.choice([1, 4, 8, 64, 512, 4096])
            data[at:at + length] = bytes(len(data[at:at + length]))
        elif kind == "bytes":
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(size)
                patch = rng.randbytes(rng.randint(1, 8))
                data[at:at + len(patch)] = patch[:len(data[at:at + len(patch)])]
        else:
            start, length = rng.choice(spans)
            width = rng.choice([1, 2, 4, 8])
            at = start + rng.randrange(max(1, length - width + 1))
            if rng.random() < 0.5:  # fields are mostly naturally aligned
                at -= (at - start) % width
            piece = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            data[at:at + width] = piece[:len(data[at:at + width])]
        if len(data) < 2:
            data = bytearray(b"\0\0")
    return bytes(data)


CASES = {
    # name: (fixture, blob dirs, examples, full exercise)
    "v6-2.2": ("bootstrap/rafs-v6-2.2.boot", ["blobs"], 700, True),
    "v5-sha256": ("repeatable/sha256-nocompress-repeatable", ["repeatable/blobs"], 700, True),
    "v5-lz4-2020": ("historic/repeatable-2020/blake3-lz4_block-non_repeatable", ["repeatable/blobs"], 400, True),
    "toc-layer": ("toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca", [], 300, True),
    "accel-v5": ("acceleration-service/v5-image.boot", [], 50, False),
    "accel-v6": ("acceleration-service/v6-image-raw-size-438272.boot", [], 50, False),
    "tarball-v6": ("nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz", [], 60, False),
    "writer-v5": (None, [], 400, True),
    "writer-v6": (None, [], 400, True),
    "layout-a": (None, [], 200, True),
    "layout-b": (None, [], 200, True),
}


@pytest.mark.parametrize("case", CASES)
def test_mutated_image_gives_only_nydusfs_errors(case, workdir):
    rel, blob_rels, examples, full = CASES[case]
    raw = fixture_path(rel).read_bytes() if rel else writer_images(workdir)[case]
    source = os.path.join(workdir, f"pristine-{case}")
    with open(source, "wb") as f:
        f.write(raw)
    spans: list[tuple[int, int]] = []
    if not rel or not rel.endswith(".tar.gz"):
        with open_image(source) as im:
            # aim at the decoded structures where the bootstrap is stored as is in the file
            boot = im.layout.bootstrap
            base = boot.offset if boot is not None else 0
            if raw[base:base + len(im.buf)] == bytes(im.buf):
                spans = [(base + r.offset, len(r.data)) for r in regions(im) if r.data]
    blob_dirs = [str(FIXTURES / b) for b in blob_rels]
    # layer files keep their name: the name stem is part of how their blob is found
    target = os.path.join(workdir, case, os.path.basename(rel or case))
    os.makedirs(os.path.dirname(target), exist_ok=True)

    @settings(max_examples=examples, deadline=None, derandomize=DERANDOMIZE, database=None)
    @given(mutations(spans))
    def check(edits):
        data = apply(raw, edits, spans)
        tmp = target + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # never rewrite a file an earlier example still maps
        run_guarded(target, blob_dirs, full)

    check()


@pytest.mark.parametrize("case", ["v6-2.2", "v5-lz4-2020"])
def test_mutated_blob_gives_only_blob_errors(case, workdir):
    rel, blob_rels, _, _ = CASES[case]
    boot = str(fixture_path(rel))
    with open_image(boot, [str(FIXTURES / b) for b in blob_rels]) as im:
        name = os.path.basename(im.blob_store.path_of(0))
        raw = open(im.blob_store.path_of(0), "rb").read()
    blob_dir = os.path.join(workdir, f"blobs-{case}")
    os.makedirs(blob_dir, exist_ok=True)

    @settings(max_examples=150, deadline=None, derandomize=DERANDOMIZE, database=None)
    @given(mutations([]))
    def check(edits):
        tmp = os.path.join(blob_dir, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(apply(raw, edits, []))
        os.replace(tmp, os.path.join(blob_dir, name))
        run_guarded(boot, [blob_dir])

    check()


def test_pristine_images_raise_nothing(workdir):
    for case, (rel, blob_rels, _, full) in CASES.items():
        path = str(fixture_path(rel)) if rel else os.path.join(workdir, case + ".boot")
        if not rel:
            with open(path, "wb") as f:
                f.write(writer_images(workdir)[case])
        exercise(path, [str(FIXTURES / b) for b in blob_rels], full)


def case_bytes(case: str, workdir: str) -> tuple[bytes, list[str]]:
    rel, blob_rels, _, _ = CASES[case]
    raw = fixture_path(rel).read_bytes() if rel else writer_images(workdir)[case]
    return raw, [str(FIXTURES / b) for b in blob_rels]


@pytest.mark.parametrize("case", ["v6-2.2", "v5-sha256", "writer-v5", "writer-v6"])
def test_every_truncation(case, workdir):
    """Cut the file at evenly spaced lengths (8-byte steps or finer than 1/500 of it)."""
    raw, blob_dirs = case_bytes(case, workdir)
    step = max(8, len(raw) // 500 // 8 * 8)
    target = os.path.join(workdir, f"cut-{case}")
    for cut in range(0, len(raw), step):
        with open(target + ".tmp", "wb") as f:
            f.write(raw[:cut])
        os.replace(target + ".tmp", target)
        run_guarded(target, blob_dirs)


@pytest.mark.parametrize("case", ["v6-2.2", "v5-sha256", "writer-v5", "writer-v6"])
def test_every_zeroed_window(case, workdir):
    """Zero one 64-byte window at a time, over the whole file."""
    raw, blob_dirs = case_bytes(case, workdir)
    target = os.path.join(workdir, f"zero-{case}")
    for at in range(0, len(raw), 64):
        if not any(raw[at:at + 64]):
            continue
        with open(target + ".tmp", "wb") as f:
            f.write(raw[:at] + bytes(len(raw[at:at + 64])) + raw[at + 64:])
        os.replace(target + ".tmp", target)
        run_guarded(target, blob_dirs)
