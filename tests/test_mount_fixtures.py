"""Mount the upstream-built fixtures and compare with their ground truth (real FUSE, root)."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import pytest

from conftest import fixture_path, needs_root
from mount_helpers import Mounts, compare_with_reader, md5_lines
from nydusfs.format.flags import SuperFlags
from nydusfs.reader import open_image

pytestmark = needs_root



def parse_result(path: pathlib.Path) -> tuple[list, list[str]]:
    """The `tree -a -J -v` JSON and the sorted md5sum lines of an upstream `.result` file."""
    text = path.read_text()
    end = text.index("\n]\n") + 3
    return json.loads(text[:end]), sorted(line for line in text[end:].splitlines() if line.strip())


def tree_json(path: str) -> dict:
    """The mounted tree in the shape of `tree -J` (children sorted by name, links not followed)."""
    entries = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.islink(full):
            entries.append({"type": "link", "name": name, "target": os.readlink(full), "contents": []})
        elif os.path.isdir(full):
            entries.append(tree_json(full) | {"name": name})
        else:
            entries.append({"type": "file", "name": name})
    return {"type": "directory", "name": "", "contents": entries}


def sort_tree(node: dict) -> dict:
    if "contents" in node:
        node = dict(node, contents=sorted((sort_tree(c) for c in node["contents"]),
                                          key=lambda c: c["name"]))
    return node


def counts(path: str) -> tuple[int, int]:
    """(directories, files) as tree(1) reports them: the root not counted, a symlink counted
    as a directory when it leads to one (tree does not descend into it)."""
    dirs = files = 0
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full):
            dirs += 1
            if not os.path.islink(full):
                d, f = counts(full)
                dirs, files = dirs + d, files + f
        else:
            files += 1
    return dirs, files


REPEATABLE = [
    ("repeatable/sha256-nocompress-repeatable", "repeatable/sha256-nocompress-repeatable.result"),
    ("repeatable/blake3-lz4_block-non_repeatable",
     "repeatable/blake3-lz4_block-non_repeatable.result"),
    # the only lz4_block pair: same tree, compressed blob
    ("historic/repeatable-2020/blake3-lz4_block-non_repeatable",
     "repeatable/blake3-lz4_block-non_repeatable.result"),
]


@pytest.mark.parametrize("boot,result", REPEATABLE,
                         ids=[b.rsplit("/", 2)[-2] + "/" + b.rsplit("/", 1)[-1] for b, _ in REPEATABLE])
def test_repeatable_tree_and_md5_equal_result(mounts: Mounts, boot: str, result: str) -> None:
    expected_tree, expected_md5 = parse_result(fixture_path(result))
    m = mounts.mount(fixture_path(boot), "--blob-dir", fixture_path("repeatable/blobs"))
    got = tree_json(str(m.path))
    root, report = expected_tree
    assert sort_tree(got) == sort_tree(root)
    assert counts(str(m.path)) == (report["directories"], report["files"])
    assert md5_lines(m.path) == expected_md5


def test_repeatable_every_field_matches_reader(mounts: Mounts) -> None:
    """Flags 0x16 (EXPLICIT_UID_GID): the stored owners (1000) show through as they are."""
    boot = fixture_path("historic/repeatable-2020/blake3-lz4_block-non_repeatable")
    m = mounts.mount(boot, "--blob-dir", fixture_path("repeatable/blobs"))
    with open_image(boot, [fixture_path("repeatable/blobs")]) as image:
        assert compare_with_reader(image, m.path) == 54
    st = os.lstat(m.path / "hardlink-test" / "foo")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    # the three names of one file share one inode
    inos = {os.lstat(m.path / p).st_ino for p in
            ("hardlink-test/foo", "hardlink-test/test.sh", "normal-file-test/test.sh")}
    assert len(inos) == 1 and st.st_nlink == 3


def test_v6_fixture_sizes_and_verified_data(mounts: Mounts) -> None:
    boot = fixture_path("bootstrap/rafs-v6-2.2.boot")
    m = mounts.mount(boot, "--blob-dir", fixture_path("blobs"), "--verify-chunks")
    assert sorted(os.listdir(m.path)) == ["lib.rs", "sync_io.rs"]
    assert os.stat(m.path / "lib.rs").st_size == 16931
    assert os.stat(m.path / "sync_io.rs").st_size == 13400
    # every chunk was checked against its blake3 digest, so these bytes are the image's
    assert len((m.path / "lib.rs").read_bytes()) == 16931
    assert len((m.path / "sync_io.rs").read_bytes()) == 13400
    assert os.stat(m.path).st_ino == 1
    with open_image(boot, [fixture_path("blobs")]) as image:
        assert compare_with_reader(image, m.path) == 3


def test_layer_file_with_inlined_bootstrap(mounts: Mounts) -> None:
    """BOOTSTRAP may be a Nydus layer file; its own blob is the file itself."""
    layer = fixture_path("toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca")
    m = mounts.mount(layer)
    assert sorted(os.listdir(m.path)) == ["error.rs", "lib.rs", "logger.rs"]
    with open_image(layer) as image:
        assert compare_with_reader(image, m.path) == 4
    assert b"fn " in (m.path / "logger.rs").read_bytes()


@pytest.mark.parametrize("boot", ["acceleration-service/v5-image.boot",
                                  "acceleration-service/v6-image-raw-size-438272.boot"])
def test_metadata_only_image_walks_and_data_fails_with_eio(mounts: Mounts, boot: str) -> None:
    """3517-entry images whose blob upstream never published: the whole tree is served from the
    bootstrap; reading file data fails with EIO, logged once for the blob, and the mount lives."""
    path = fixture_path(boot)
    with open_image(path) as image:
        mounts.expect_log(rf"ERROR (read: inode \d+|prefetch): blob {image.blobs[0].blob_id}: "
                          r"blob file not found")
    m = mounts.mount(path)
    with open_image(path) as image:
        # v5 sets EXPLICIT_UID_GID: owners as stored; v6 does not: the server's own ids
        owner = None if image.flags & SuperFlags.EXPLICIT_UID_GID else (os.geteuid(), os.getegid())
        assert compare_with_reader(image, m.path, data=False, owner=owner) == 3517
        blob_id = image.blobs[0].blob_id
        stored_gid = image.inode(image.resolve("/etc/gshadow")).gid
    assert stored_gid == 42
    assert os.lstat(m.path / "etc" / "gshadow").st_gid == (42 if owner is None else os.getegid())
    target = m.path / "etc" / "adduser.conf"
    for _ in range(2):
        with pytest.raises(OSError) as e:
            target.read_bytes()
        assert e.value.errno == errno.EIO
    assert os.listdir(m.path / "etc")                 # still serving
    log = m.log()
    assert log.count(f"blob {blob_id}: blob file not found") == 1, log
