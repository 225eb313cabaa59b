"""merge never brings back a lower file that a whiteout of the layer removed, also when the layer
then replaces the whiteout's directory (the marker leaves the layer's tree with it).

Each stack of stacks.REFUSED is refused by merge, by the merge tests' reference and by check's
reference (three implementations that share no code); the stacks where the link is legitimate
(stacks.STACKS) still merge to what the reference says.
"""

from __future__ import annotations

import pathlib

import pytest
from stacks import (REFUSED, Refused, assert_facts, build_bootstraps, build_layers, differences,
                    hardlink_to_lower_then_dir_replaced, reference, snapshot_image)

from nydusfs.check import oracle
from nydusfs.errors import LayerError, MergeError
from nydusfs.merge import merge
from nydusfs.util.output import write_outputs


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_all_refuse(tmp_path: pathlib.Path, name: str, version: int) -> None:
    layers = REFUSED[name]()
    with pytest.raises(Refused):
        reference(layers)
    tars = [str(layer.write(tmp_path / f"oracle{i}.tar")) for i, layer in enumerate(layers)]
    with pytest.raises(LayerError):
        oracle.reference(tars)
    with pytest.raises((LayerError, MergeError)) as e:
        merge(build_layers(layers, tmp_path / "files", version=version))
    assert "hard link" in str(e.value)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bare_bootstraps_refuse_too(tmp_path: pathlib.Path, name: str) -> None:
    layers = REFUSED[name]()
    try:
        boots, _ = build_bootstraps(layers, tmp_path)
    except LayerError as e:
        assert "hard link" in str(e)     # create refuses a link below its own non-directory
        return
    with pytest.raises(MergeError, match="hard link"):
        merge(boots)


@pytest.mark.parametrize("version", [5, 6])
def test_link_made_before_its_directory_is_replaced_keeps_the_file(tmp_path: pathlib.Path,
                                                                    version: int) -> None:
    stack = hardlink_to_lower_then_dir_replaced()
    want = reference(stack.layers)
    out = tmp_path / "merged.boot"
    write_outputs([(str(out), merge(build_layers(stack.layers, tmp_path, version=version)).bootstrap())])
    got = snapshot_image(out, [tmp_path / "layers"])
    assert not differences(got, want), differences(got, want)
    assert_facts(stack, got)
