"""Property: however a chunk record is edited, a verifying read never returns wrong bytes.

Random fields of random chunk records (and, in RAFS v6, of the inodes' chunk indexes) of an
image written by `nydusfs create` are set to random, boundary or borrowed values; then every
file is read through the reader with verification, as the mount and check read it. Each read
returns exactly the file's bytes or fails with a NydusfsError; and when `dump --verify` finds
nothing, every file reads right.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_verify_chunks import CHUNK, Lied, convert, records

from nydusfs import dump as model
from nydusfs.errors import NydusfsError
from nydusfs.format.v5 import ChunkInfo
from nydusfs.reader import open_image

DERANDOMIZE = os.environ.get("NYDUSFS_FUZZ_RANDOM") != "1"
FIELDS = {"block_id": "32s", "blob_index": "I", "flags": "I", "compressed_size": "I",
          "uncompressed_size": "I", "compressed_offset": "Q", "uncompressed_offset": "Q",
          "file_offset": "Q", "index": "I"}
NAMES = ["f0", "f1", "f2"]


@pytest.fixture(scope="module", params=[5, 6], ids=["v5", "v6"])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lied, dict, bytes]:
    lied = convert(tmp_path_factory.mktemp(f"mutate-v{request.param}"), request.param, "zstd", NAMES)
    recs = {name: records(str(lied.boot), lied.blob_dir, "/" + name) for name in NAMES}
    return lied, recs, lied.boot.read_bytes()


def values(field: str, recs: dict) -> st.SearchStrategy:
    """Boundary values, random ones, the field of another chunk, and near misses of those."""
    others = [getattr(r.info, field) for rs in recs.values() for r in rs]
    if field == "block_id":
        return st.sampled_from([bytes(32), b"\xff" * 32] + others) | st.binary(min_size=32, max_size=32)
    top = 2 ** (64 if FIELDS[field] == "Q" else 32)
    return (st.sampled_from(others) | st.sampled_from([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, top - 1])
            | st.integers(0, top - 1)
            | st.tuples(st.sampled_from(others), st.integers(-2, 2)).map(lambda t: (t[0] + t[1]) % top))


@settings(max_examples=150, deadline=None, derandomize=DERANDOMIZE)
@given(data=st.data())
def test_verified_reads_are_right_or_fail(image: tuple[Lied, dict, bytes], data: st.DataObject) -> None:
    lied, recs, original = image
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        name = data.draw(st.sampled_from(NAMES), label="file")
        rec = data.draw(st.sampled_from(recs[name]), label="chunk")
        if rec.addr is not None and data.draw(st.booleans(), label="chunk index"):
            at = rec.addr + data.draw(st.integers(0, 7), label="byte")
            raw[at] = data.draw(st.integers(0, 255), label="value")
            continue
        field = data.draw(st.sampled_from(sorted(FIELDS)), label="field")
        value = data.draw(values(field, recs), label="to")
        struct.pack_into("<" + FIELDS[field], raw, rec.pos + ChunkInfo.field_offset(field), value)
    boot = lied.boot.parent / "mutated.boot"
    boot.write_bytes(raw)
    right = True
    try:
        im = open_image(boot, [lied.blob_dir])
    except NydusfsError:
        return
    with im:
        for name in NAMES:
            want = lied.files[name]
            try:
                ino = im.resolve("/" + name)
                got = im.read(ino, 0, len(want) + 1)
            except NydusfsError:
                right = False
                continue
            assert got == want, f"{name}: a verifying read returned wrong bytes"
        try:
            failures = list(model.verify(im))
        except NydusfsError:
            return
        event(f"reads {'all right' if right else 'refused'}, dump --verify "
              f"{'failed' if failures else 'passed'}")
        if not failures:
            assert right, "dump --verify found nothing, yet a file did not read"
