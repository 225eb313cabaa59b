"""Blob table rules: own blob ids, chunk-dict blobs, dropping and ordering, parent bootstraps."""

from __future__ import annotations

import pathlib
import shutil

import pytest
from corpus import Layer, pattern
from stacks import CHUNK, build_bootstraps, build_layers, differences, reference, snapshot_image

from nydusfs.errors import MergeError, UsageError
from nydusfs.merge import MergeOptions, merge
from nydusfs.util.output import write_outputs
from nydusfs.reader import open_image


def write_merged(tmp: pathlib.Path, sources: list, options: MergeOptions | None = None,
                 name: str = "merged.boot") -> pathlib.Path:
    out = tmp / name
    write_outputs([(str(out), merge(sources, options).bootstrap())])
    return out


def blob_ids(path: pathlib.Path) -> list[str]:
    with open_image(path) as image:
        return [b.blob_id for b in image.blobs]


def own_ids(paths: list[pathlib.Path]) -> list[str | None]:
    """The blob id each layer file's bootstrap stores for its own (last) blob."""
    out = []
    for p in paths:
        with open_image(p) as image:
            out.append(image.blobs[-1].blob_id if image.blobs else None)
    return out


@pytest.mark.parametrize("version", [5, 6])
def test_first_reference_order_and_bootstrap_only_layers(tmp_path: pathlib.Path, version: int) -> None:
    layers = [Layer().file("z/data", pattern(2 * CHUNK, 1)),
              Layer().file("a/data", pattern(CHUNK, 2)),
              Layer().dir("z", mode=0o700),                      # no data: bootstrap only
              Layer().file("m/data", pattern(10, 3))]
    src = build_layers(layers, tmp_path, version=version)
    assert own_ids(src[2:3]) == [None]
    out = write_merged(tmp_path, src)
    # /a/data, /m/data, /z/data: the blobs of layers 1, 3, 0, named after the layer files
    assert blob_ids(out) == [src[1].name, src[3].name, src[0].name]
    assert not differences(snapshot_image(out, [tmp_path / "layers"]), reference(layers))


@pytest.mark.parametrize("version", [5, 6])
def test_unreferenced_blobs_are_dropped(tmp_path: pathlib.Path, version: int) -> None:
    layers = [Layer().file("d/a", pattern(CHUNK, 1)).file("keep", b""),
              Layer().file("b", pattern(CHUNK, 2)),
              Layer().whiteout("d").whiteout("b").file("c", b"c")]
    src = build_layers(layers, tmp_path, version=version)
    out = write_merged(tmp_path, src)
    assert blob_ids(out) == [src[2].name]
    assert not differences(snapshot_image(out, [tmp_path / "layers"]), reference(layers))


def test_no_blobs_at_all(tmp_path: pathlib.Path) -> None:
    layers = [Layer().dir("a").file("a/empty", b""), Layer().symlink("l", "a")]
    out = write_merged(tmp_path, build_layers(layers, tmp_path))
    assert blob_ids(out) == []
    assert not differences(snapshot_image(out), reference(layers))


@pytest.mark.parametrize("version", [5, 6])
def test_id_options(tmp_path: pathlib.Path, version: int) -> None:
    layers = [Layer().file("a", pattern(CHUNK, 1)), Layer().file("b", pattern(CHUNK, 2))]
    src = build_layers(layers, tmp_path, version=version)
    ids = ["1" * 64, "sha256:" + "2" * 64]
    out = write_merged(tmp_path, src, MergeOptions(original_blob_ids=ids))
    assert blob_ids(out) == ["1" * 64, "2" * 64]

    digests = ["ab" * 32, "cd" * 32]
    out = write_merged(tmp_path, src, MergeOptions(original_blob_ids=ids, blob_digests=digests,
                                                   blob_sizes=[1234, 5678]), "m2.boot")
    assert blob_ids(out) == digests
    with open_image(out) as image:
        assert [b.compressed_size for b in image.blobs] == [1234, 5678]

    out = write_merged(tmp_path, src, MergeOptions(keep_blob_ids=True), "m3.boot")
    assert blob_ids(out) == own_ids(src)


def test_toc_options_v6(tmp_path: pathlib.Path) -> None:
    src = build_layers([Layer().file("a", pattern(CHUNK, 1))], tmp_path)
    out = write_merged(tmp_path, src, MergeOptions(blob_toc_digests=["ee" * 32], blob_toc_sizes=[96]))
    with open_image(out) as image:
        entry = image.blobs[0].v6
        assert (entry.blob_toc_digest, entry.blob_toc_size) == (bytes.fromhex("ee" * 32), 96)


def test_bad_id_options(tmp_path: pathlib.Path) -> None:
    src = build_layers([Layer().file("a", b"a"), Layer().file("b", b"b")], tmp_path)
    with pytest.raises(UsageError, match="one item per source"):
        merge(src, MergeOptions(blob_sizes=[1]))
    with pytest.raises(UsageError, match="--blob-digests"):
        merge(src, MergeOptions(blob_digests=["zz" * 32, "00" * 32]))
    with pytest.raises(MergeError, match="at most 64") as e:
        merge(src, MergeOptions(original_blob_ids=["x" * 65, "y"]))
    assert str(src[0]) in str(e.value)


def test_same_layer_twice_shares_one_entry(tmp_path: pathlib.Path) -> None:
    layers = [Layer().file("a", pattern(CHUNK, 1))]
    (src,) = build_layers(layers, tmp_path)
    twin = src.with_name("f" * 64)
    shutil.copy(src, twin)
    out = write_merged(tmp_path, [src, twin])
    # the entry keeps the id given for the first layer that brought the blob in
    assert blob_ids(out) == [src.name]
    assert not differences(snapshot_image(out, [tmp_path / "layers"]), reference(layers * 2))


def _dict_setup(tmp: pathlib.Path, version: int) -> tuple[list, pathlib.Path, list[Layer]]:
    shared = pattern(4 * CHUNK, 42)
    (dict_boot,), blob_dir = build_bootstraps([Layer().file("shared", shared)], tmp / "dict",
                                              version=version)
    layers = [Layer().file("x/shared-copy", shared).file("x/own", pattern(CHUNK, 5)),
              Layer().file("y/shared-again", shared[:2 * CHUNK]).file("y/own", pattern(CHUNK, 6))]
    src = build_layers(layers, tmp, version=version, chunk_dict=str(dict_boot))
    return src, dict_boot, layers


@pytest.mark.parametrize("version", [5, 6])
def test_chunk_dict_blobs(tmp_path: pathlib.Path, version: int) -> None:
    src, dict_boot, layers = _dict_setup(tmp_path, version)
    with open_image(dict_boot) as image:
        dict_id = image.blobs[0].blob_id
    with open_image(src[0]) as image:
        assert dict_id in [b.blob_id for b in image.blobs] and len(image.blobs) == 2
    out = write_merged(tmp_path, src, MergeOptions(chunk_dict=str(dict_boot)))
    # /x/own (layer 0), /x/shared-copy (dict), /y/... (layer 1)
    assert blob_ids(out) == [src[0].name, dict_id, src[1].name]
    snap = snapshot_image(out, [tmp_path / "layers", tmp_path / "dict" / "blobs"])
    assert not differences(snap, reference(layers))


def test_second_own_blob_is_an_error(tmp_path: pathlib.Path) -> None:
    """Without --chunk-dict, a layer built against a dict has two blobs of its own."""
    src, _, _ = _dict_setup(tmp_path, 6)
    with pytest.raises(MergeError, match="two data blobs of its own") as e:
        merge(src)
    assert f"layer 0 ({src[0]})" in str(e.value)


@pytest.mark.parametrize("version", [5, 6])
def test_parent_bootstrap(tmp_path: pathlib.Path, version: int) -> None:
    layers = [Layer().dir("a").file("a/x", pattern(CHUNK, 1)).file("a/y", b"y"),
              Layer().file("b", pattern(CHUNK, 2)).whiteout("a/y"),
              Layer().whiteout("a").file("c", pattern(CHUNK, 3)).file("b", b"new b")]
    src = build_layers(layers, tmp_path, version=version)
    parent = write_merged(tmp_path, src[:2], name="parent.boot")
    on_parent = write_merged(tmp_path, src[2:], MergeOptions(parent_bootstrap=str(parent)), "p.boot")
    at_once = write_merged(tmp_path, src, name="all.boot")
    blobs = [tmp_path / "layers"]
    assert snapshot_image(on_parent, blobs) == snapshot_image(at_once, blobs)
    assert blob_ids(on_parent) == blob_ids(at_once) == [src[2].name]
    assert not differences(snapshot_image(at_once, blobs), reference(layers))


@pytest.mark.parametrize("version", [5, 6])
def test_chunk_dict_that_is_a_layer_file(tmp_path: pathlib.Path, version: int) -> None:
    """Layout B files inline their metadata; the dict blob a layer file lists must stay a
    blob of its own, not be taken for the layer's blob (which the reader names after the
    file)."""
    shared = pattern(4 * CHUNK, 42)
    (dict_file,) = build_layers([Layer().file("s", shared)], tmp_path / "dict", version=version,
                                layout="B")
    layers = [Layer().file("x", shared).file("own", pattern(CHUNK + 5, 3))]
    src = build_layers(layers, tmp_path, version=version, layout="B", chunk_dict=str(dict_file))
    out = write_merged(tmp_path, src, MergeOptions(chunk_dict=str(dict_file)))
    assert blob_ids(out) == [src[0].name, dict_file.name]
    snap = snapshot_image(out, [tmp_path / "layers", tmp_path / "dict" / "layers"])
    assert not differences(snap, reference(layers))
