"""A second, independent oracle: `nydusfs check` (its own OCI layer rules) on every stack."""

from __future__ import annotations

import pathlib

import pytest
from stacks import STACKS, build_layers

from nydusfs.check import CheckOptions, run_check
from nydusfs.merge import merge
from nydusfs.util.output import write_outputs


@pytest.mark.parametrize("name", sorted(STACKS))
@pytest.mark.parametrize("version", [5, 6])
def test_check_finds_no_difference(tmp_path: pathlib.Path, name: str, version: int) -> None:
    stack = STACKS[name]()
    sources = build_layers(stack.layers, tmp_path, version=version)
    out = tmp_path / "merged.boot"
    write_outputs([(str(out), merge(sources).bootstrap())])
    tars = [str(tmp_path / f"layer{i}.tar") for i in range(len(stack.layers))]
    result = run_check(CheckOptions(bootstrap=str(out), layers=tars,
                                    blob_dirs=[str(tmp_path / "layers")], workers=1))
    assert result.equal, [d.to_json() for d in result.differences]
