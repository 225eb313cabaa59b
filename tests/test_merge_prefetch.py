"""`--prefetch-policy fs`: patterns become the merged image's prefetch table."""

from __future__ import annotations

import pathlib

import pytest
from corpus import Layer, pattern
from stacks import build_layers

from nydusfs.merge import MergeOptions, merge
from nydusfs.util.prefetch import parse_patterns
from nydusfs.util.output import write_outputs
from nydusfs.reader import open_image

LAYERS = [Layer().dir("etc").file("etc/conf", b"c").file("bin/sh", pattern(5000, 1)).file("empty", b""),
          Layer().file("usr/lib/big", pattern(9000, 2)).whiteout("etc/conf").file("etc/new", b"n")]


def prefetch_paths(tmp: pathlib.Path, version: int, patterns: list[bytes],
                   policy: str = "fs") -> tuple[list[bytes], list[str]]:
    src = build_layers(LAYERS, tmp, version=version)
    result = merge(src, MergeOptions(prefetch_policy=policy, prefetch_patterns=patterns))
    out = tmp / "m.boot"
    write_outputs([(str(out), result.bootstrap())])
    with open_image(out) as image:
        by_ino = {}
        for path, ino in image.walk():
            by_ino.setdefault(ino, path)
        return [by_ino[i] for i in image.prefetch], result.warnings


@pytest.mark.parametrize("version", [5, 6])
def test_root_pattern(tmp_path: pathlib.Path, version: int) -> None:
    assert prefetch_paths(tmp_path, version, [b"/"]) == ([b"/"], [])


@pytest.mark.parametrize("version", [5, 6])
def test_patterns_in_order_and_what_is_left_out(tmp_path: pathlib.Path, version: int) -> None:
    got, warnings = prefetch_paths(tmp_path, version,
                                   [b"/usr/lib/big", b"/etc/conf", b"/empty", b"/bin", b"/etc/new"])
    assert got == [b"/usr/lib/big", b"/bin", b"/etc/new"]
    assert len(warnings) == 2
    assert "/etc/conf" in warnings[0] and "matches nothing" in warnings[0]
    assert "/empty" in warnings[1] and "empty file" in warnings[1]


@pytest.mark.parametrize("policy", ["none", "blob"])
def test_other_policies_write_no_table(tmp_path: pathlib.Path, policy: str) -> None:
    assert prefetch_paths(tmp_path, 6, [b"/bin/sh"], policy) == ([], [])


def test_pattern_parsing() -> None:
    kept, warnings = parse_patterns(b" /usr/lib \nrelative/path\n\n/usr/lib/x\n/usr//bin/\n/usr/lib\n/\n/etc\n")
    assert kept == [b"/usr/lib", b"/usr/bin", b"/"]
    assert [w.split("'")[1] for w in warnings] == ["relative/path", "/usr/lib/x", "/usr/lib", "/etc"]
    assert parse_patterns(b"/\xff\xfe\n") == ([b"/\xff\xfe"], [])
