"""Each option with a fixed set of values takes them from one enum (nydusfs/format/choices.py):
`--help`, the docs' synopsis and the validation of the library options all agree with it."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from nydusfs.cli import build_parser
from nydusfs.create.pipeline import CreateOptions, validate
from nydusfs.errors import UsageError
from nydusfs.format.choices import (FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor, Digester, LayerFileLayout,
                                    PrefetchPolicy, WhiteoutSpec)
from nydusfs.merge.options import MergeOptions

CREATE = {"--layout": LayerFileLayout.values(), "--fs-version": tuple(map(str, FS_VERSIONS)),
          "--compressor": Compressor.values(WRITABLE_COMPRESSORS), "--digester": Digester.values(),
          "--whiteout-spec": WhiteoutSpec.values(), "--prefetch-policy": PrefetchPolicy.values()}
MERGE = {"--whiteout-spec": WhiteoutSpec.values(), "--prefetch-policy": PrefetchPolicy.values()}
CASES = [("create", o, v) for o, v in CREATE.items()] + [("merge", o, v) for o, v in MERGE.items()]


def _choices(verb: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in build_parser(verb)._actions if a.dest == "verb")
    parser = sub.choices[verb]  # type: ignore[index]
    action = next(a for a in parser._actions if option in a.option_strings)
    return tuple(str(c) for c in action.choices)


@pytest.mark.parametrize("verb,option,values", CASES)
def test_help_and_docs_list_the_enum(verb: str, option: str, values: tuple[str, ...]) -> None:
    assert _choices(verb, option) == values
    doc = (ROOT / "docs" / f"{verb}.md").read_text()
    synopsis = doc.split("```", 2)[1]
    assert re.search(rf"\[?{re.escape(option)} {re.escape('|'.join(values))}\b", synopsis), \
        f"docs/{verb}.md synopsis does not list {option} {'|'.join(values)}"


@pytest.mark.parametrize("field,option", [("compressor", "--compressor"), ("digester", "--digester"),
                                          ("whiteout_spec", "--whiteout-spec"),
                                          ("prefetch_policy", "--prefetch-policy"), ("layout", "--layout")])
def test_create_validation_names_the_option_and_the_values(field: str, option: str) -> None:
    opts = CreateOptions(output="x", **{field: "bogus"})
    with pytest.raises(UsageError, match=rf"^{option}: expected one of .*, found 'bogus'$"):
        validate(opts)
    validate(CreateOptions(output="x", **{field: CREATE[option][-1]}))


def test_gzip_is_read_but_not_written() -> None:
    with pytest.raises(UsageError, match="expected one of none, lz4_block, zstd, found 'gzip'"):
        validate(CreateOptions(output="x", compressor="gzip"))


@pytest.mark.parametrize("field,option", [("whiteout_spec", "--whiteout-spec"),
                                          ("prefetch_policy", "--prefetch-policy")])
def test_merge_validation(field: str, option: str) -> None:
    with pytest.raises(UsageError, match=rf"^{option}: expected one of .*, found 'x'$"):
        MergeOptions(**{field: "x"}).validate(["a"])
