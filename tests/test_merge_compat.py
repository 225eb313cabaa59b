"""Settings the layers of one merge must share; what the merged superblock takes from them."""

from __future__ import annotations

import pathlib

import pytest
from corpus import Layer, pattern
from stacks import CHUNK, build_bootstraps, build_layers, differences, reference, snapshot_image

from nydusfs.write.bootstrap_v5 import write_v5
from nydusfs.write.bootstrap_v6 import write_v6
from nydusfs.errors import MergeError
from nydusfs.format.flags import SuperFlags
from nydusfs.merge import MergeOptions, merge
from nydusfs.util.output import write_outputs
from nydusfs.reader import open_image
from nydusfs.tree.load import load_tree

LOWER = Layer().dir("a").file("a/x", pattern(CHUNK + 3, 1))
UPPER = Layer().file("a/y", pattern(2 * CHUNK, 2)).whiteout("a/x")


def two(tmp: pathlib.Path, lower: dict, upper: dict) -> list[pathlib.Path]:
    return (build_layers([LOWER], tmp / "l", **lower) + build_layers([UPPER], tmp / "u", **upper))


def assert_names_both(err: MergeError, paths: list[pathlib.Path], field: str, a: str, b: str) -> None:
    text = str(err)
    assert field in text and a in text and b in text, text
    assert str(paths[0]) in text and str(paths[1]) in text, text


@pytest.mark.parametrize("field,lower,upper,a,b", [
    ("RAFS version", {"version": 5}, {"version": 6}, "v5", "v6"),
    ("chunk size", {"chunk_size": 0x1000}, {"chunk_size": 0x2000}, "0x1000", "0x2000"),
    ("compressor", {"version": 5, "compressor": "zstd"}, {"version": 5, "compressor": "none"},
     "zstd", "none"),
    ("digester", {"version": 5, "digester": "blake3"}, {"version": 5, "digester": "sha256"},
     "blake3", "sha256"),
])
def test_mismatch_names_both_layers_field_and_values(tmp_path: pathlib.Path, field: str, lower: dict,
                                                     upper: dict, a: str, b: str) -> None:
    paths = two(tmp_path, lower, upper)
    with pytest.raises(MergeError) as e:
        merge(paths)
    assert_names_both(e.value, paths, field, a, b)


def test_explicit_uid_gid_mismatch(tmp_path: pathlib.Path) -> None:
    paths = two(tmp_path, {}, {})
    with open_image(paths[1]) as image:
        tree = load_tree(image)
    tree.explicit_uid_gid = False
    plain = tmp_path / "no-explicit.boot"
    plain.write_bytes(write_v6(tree)[0])
    with pytest.raises(MergeError) as e:
        merge([paths[0], plain])
    assert_names_both(e.value, [paths[0], plain], "explicit uid/gid", "True", "False")


@pytest.mark.parametrize("setting", [{"compressor": "none"}, {"digester": "sha256"}])
def test_v6_layers_may_differ_in_compressor_and_digester(tmp_path: pathlib.Path, setting: dict) -> None:
    """v6 records both per blob; the merged superblock follows the last layer."""
    paths = two(tmp_path, {}, setting)
    result = merge(paths)
    key = next(iter(setting))
    assert getattr(result.tree, key) == setting[key]
    out = tmp_path / "m.boot"
    write_outputs([(str(out), result.bootstrap())])
    with open_image(out) as image:
        assert getattr(image, key) == setting[key]
        assert [b.compressor for b in image.blobs] == [setting.get("compressor", "zstd")]
    snap = snapshot_image(out, [tmp_path / "l" / "layers", tmp_path / "u" / "layers"])
    assert not differences(snap, reference([LOWER, UPPER]))


def test_chunk_dict_is_the_reference(tmp_path: pathlib.Path) -> None:
    (dict_boot,), _ = build_bootstraps([Layer().file("d", b"dict")], tmp_path / "dict",
                                       chunk_size=0x2000)
    paths = build_layers([LOWER, UPPER], tmp_path)
    with pytest.raises(MergeError) as e:
        merge(paths, MergeOptions(chunk_dict=str(dict_boot)))
    assert_names_both(e.value, [dict_boot, paths[0]], "chunk size", "0x1000", "0x2000")
    assert "chunk dict" in str(e.value)


@pytest.mark.parametrize("version", [5, 6])
def test_superblock_flags_follow_the_sources(tmp_path: pathlib.Path, version: int) -> None:
    layers = [Layer().file("x", b"x", xattrs={b"user.a": b"1"}), Layer().whiteout("x").file("y", b"y")]
    paths = build_layers(layers, tmp_path, version=version, compressor="none", digester="sha256")
    out = tmp_path / "m.boot"
    write_outputs([(str(out), merge(paths).bootstrap())])
    with open_image(out) as image:
        assert (image.version, image.compressor, image.digester, image.chunk_size) == \
            (version, "none", "sha256", CHUNK)
        assert image.flags & SuperFlags.EXPLICIT_UID_GID
        # the only inode with xattrs was whited out: has-xattr is recomputed
        assert not image.flags & SuperFlags.HAS_XATTR
    with open_image(paths[0]) as image:
        assert image.flags & SuperFlags.HAS_XATTR


def test_v5_writer_has_xattr_set_when_kept(tmp_path: pathlib.Path) -> None:
    layers = [Layer().file("x", b"x"), Layer().file("y", b"y", xattrs={b"user.b": b"2"})]
    paths = build_layers(layers, tmp_path, version=5)
    result = merge(paths)
    data = result.bootstrap()
    assert data == write_v5(result.tree)[0]
    out = tmp_path / "m.boot"
    out.write_bytes(data)
    with open_image(out) as image:
        assert image.flags & SuperFlags.HAS_XATTR
