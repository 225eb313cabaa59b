"""Import layering: the format core, the reader, the tree, the writers and the dump data model
pull in neither pyfuse3, trio nor rich, even after they have been used (lazy imports included).
Each check runs in a fresh interpreter so that other tests' imports do not count."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

import nydusfs
from conftest import FIXTURES, fixture_path

CORE = ["nydusfs.format", "nydusfs.format.v5", "nydusfs.format.v6", "nydusfs.format.blob",
        "nydusfs.format.layer", "nydusfs.format.flags", "nydusfs.format.whiteout",
        "nydusfs.reader", "nydusfs.reader.regions", "nydusfs.tree", "nydusfs.tree.load",
        "nydusfs.write.bootstrap_v5", "nydusfs.write.bootstrap_v6", "nydusfs.dump", "nydusfs.errors"]
FORBIDDEN = ["pyfuse3", "trio", "rich"]


def fresh_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def forbidden_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_importing_the_core_loads_no_ui_or_fuse_module():
    modules = fresh_modules("\n".join(f"import {m}" for m in CORE))
    assert set(CORE) <= modules
    assert forbidden_in(modules) == []


def test_using_the_core_loads_no_ui_or_fuse_module():
    fixtures = str(FIXTURES)
    fixture_path("repeatable/sha256-nocompress-repeatable")  # skip cleanly without fixtures
    code = textwrap.dedent(f"""
        import os
        from nydusfs import dump
        from nydusfs.reader import open_image
        from nydusfs.reader.regions import reencode
        from nydusfs.tree.load import load_tree
        from nydusfs.write.bootstrap_v5 import write_v5
        from nydusfs.write.bootstrap_v6 import write_v6
        F = {fixtures!r}
        for rel, blobs in [("repeatable/sha256-nocompress-repeatable", ["repeatable/blobs"]),
                           ("bootstrap/rafs-v6-2.2.boot", ["blobs"]),
                           ("nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz", []),
                           ("toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca", [])]:
            with open_image(os.path.join(F, rel), [os.path.join(F, b) for b in blobs]) as im:
                dump.header(im)
                for node in dump.inodes(im):
                    pass
                list(dump.verify(im)) if blobs else None
                reencode(im)
                tree = load_tree(im)
                (write_v5 if im.version == 5 else write_v6)(tree)
    """)
    assert forbidden_in(fresh_modules(code)) == []


def test_merge_does_not_import_the_create_package():
    """merge shares the writers in nydusfs.write with create, not create's own modules."""
    modules = fresh_modules("import nydusfs.merge, nydusfs.cli.merge")
    assert "nydusfs.merge" in modules
    assert sorted(m for m in modules if m.startswith("nydusfs.create")) == []


def test_the_check_itself_can_fail():
    """The forbidden list is not vacuous: importing the dump CLI's renderer pulls rich."""
    modules = fresh_modules("import nydusfs.cli.dump as d, argparse\n"
                            "d._t('x')")
    assert "rich" in {m.split(".")[0] for m in modules}


# --- static scans: they cover modules added later without a list to keep up to date ---------

PACKAGE = pathlib.Path(nydusfs.__file__).parent


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(p.relative_to(PACKAGE.parent)), ast.parse(p.read_text(), str(p)))
            for p in sorted(PACKAGE.rglob("*.py"))]


def _imported_roots(tree: ast.Module) -> set[str]:
    """Top-level names of every module imported anywhere in the file (lazy imports included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("library,home", [("pyfuse3", "nydusfs/fuse/"), ("trio", "nydusfs/fuse/"),
                                          ("rich", "nydusfs/cli/")])
def test_only_one_package_imports_each_ui_or_fuse_library(library: str, home: str) -> None:
    users = [path for path, tree in _modules() if library in _imported_roots(tree)]
    assert users, f"no module imports {library}: the scan would prove nothing"
    assert [p for p in users if not p.startswith(home)] == []


def test_consumers_use_only_the_reader_interface() -> None:
    """Outside the version readers, an Image is used through what reader/base.py's `Image`
    declares (public methods and annotated attributes), never its superblocks or helpers."""
    from nydusfs.reader.base import Image

    surface = {n for n in dir(Image) if not n.startswith("_")} | set(Image.__annotations__)
    inside = {"nydusfs/reader/v5.py", "nydusfs/reader/v6.py", "nydusfs/reader/base.py"}
    found = []
    for path, tree in _modules():
        if path in inside:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            named = isinstance(owner, ast.Name) and owner.id in ("image", "im")
            held = isinstance(owner, ast.Attribute) and owner.attr == "image"
            if (named or held) and node.attr not in surface:
                found.append(f"{path}:{node.lineno}: .{node.attr}")
    assert found == []
