"""Shared test helpers: where the upstream fixtures are, and markers for root-only tests."""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("NYDUSFS_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "nydus"


def fixture_path(rel: str) -> pathlib.Path:
    """Path of an upstream fixture; the test is skipped when the shared tree is absent."""
    p = FIXTURES / rel
    if not FIXTURES.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIXTURES}")
    assert p.exists(), f"fixture {rel} missing from {FIXTURES}"
    return p


@pytest.fixture
def fixtures() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"upstream fixtures not found at {FIXTURES}")
    return FIXTURES


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (FUSE, loop devices, mount)")


@pytest.fixture
def mounts(tmp_path: pathlib.Path):
    """FUSE mounts made by a test, always taken down afterwards (tests/mount_helpers.py)."""
    from mount_helpers import Mounts

    m = Mounts(tmp_path)
    try:
        yield m
    finally:
        m.cleanup()
