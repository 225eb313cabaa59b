"""Shared test helpers: where the upstream fixtures are, and the one rule for missing prerequisites.

The rule (`unavailable`): under CI (`CI=true`) a missing upstream fixture tree, root, FUSE, a
loop device or an external tool fails the test, because CI is where the suite must prove
everything it claims. Outside CI the test is skipped, and the end of the run prints one loud
line per missing prerequisite so that nobody mistakes a partial run for a full one.
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
from typing import NoReturn

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("NYDUSFS_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "nydus"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

_MISSING: collections.Counter[str] = collections.Counter()


def unavailable(what: str) -> NoReturn:
    """A prerequisite of this test is missing: fail under CI, skip (and report loudly) outside."""
    if IN_CI:
        pytest.fail(f"CI=true and {what}", pytrace=False)
    _MISSING[what] += 1
    pytest.skip(f"not tested outside CI: {what}")


def fixture_path(rel: str) -> pathlib.Path:
    """Path of an upstream fixture (see `unavailable` when the shared tree is absent)."""
    p = FIXTURES / rel
    if not FIXTURES.is_dir():
        unavailable(f"upstream fixtures not found at {FIXTURES}")
    assert p.exists(), f"fixture {rel} missing from {FIXTURES}"
    return p


@pytest.fixture
def fixtures() -> pathlib.Path:
    if not FIXTURES.is_dir():
        unavailable(f"upstream fixtures not found at {FIXTURES}")
    return FIXTURES


def is_root() -> bool:
    return os.geteuid() == 0


def have_fuse() -> bool:
    return os.path.exists("/dev/fuse")


def have_loop() -> bool:
    return os.path.exists("/dev/loop-control")


def require_tool(name: str, package: str | None = None) -> str:
    """Absolute path of an external tool the test uses as an independent reader."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not installed (apt install {package or name})")
    return path


# Markers, checked in one place (pytest_runtest_setup below):
needs_root = pytest.mark.needs_root            # root: FUSE mounts, loop devices, mount(8)
needs_fuse = pytest.mark.needs_fuse            # /dev/fuse (and root)
needs_loop = pytest.mark.needs_loop            # loop devices (and root): kernel erofs mounts


def needs_tool(name: str, package: str | None = None) -> pytest.MarkDecorator:
    return pytest.mark.needs_tool(name, package)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_root: needs root (FUSE, loop devices, mount)")
    config.addinivalue_line("markers", "needs_fuse: needs /dev/fuse and root")
    config.addinivalue_line("markers", "needs_loop: needs loop devices and root")
    config.addinivalue_line("markers", "needs_tool(name, package): needs an external tool")


def pytest_runtest_setup(item: pytest.Item) -> None:
    wants_root = any(item.get_closest_marker(m) for m in ("needs_root", "needs_fuse", "needs_loop"))
    if wants_root and not is_root():
        unavailable("not running as root (FUSE, loop devices, mount)")
    if item.get_closest_marker("needs_fuse") and not have_fuse():
        unavailable("/dev/fuse is missing")
    if item.get_closest_marker("needs_loop") and not have_loop():
        unavailable("/dev/loop-control is missing (no loop devices)")
    for mark in item.iter_markers("needs_tool"):
        require_tool(*mark.args)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for what, count in sorted(_MISSING.items()):
        terminalreporter.write_line(
            f"!!! NOT TESTED ({count} test{'s' if count != 1 else ''} skipped; CI=true fails them): {what}",
            red=True, bold=True)


@pytest.fixture
def mounts(tmp_path: pathlib.Path):
    """FUSE mounts made by a test, always taken down afterwards (tests/mount_helpers.py)."""
    from mount_helpers import Mounts

    m = Mounts(tmp_path)
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture(autouse=True)
def server_logs_are_clean(request: pytest.FixtureRequest):
    """Any warning or error logged by a mount server of the test fails it, unless the test
    declared it with `mounts.expect_log(regex)` (runs after the mounts are taken down, so that
    the logs are complete)."""
    if "mounts" not in request.fixturenames:
        yield
        return
    made = request.getfixturevalue("mounts")   # set up after this fixture, so torn down before:
    yield                                       # the servers have stopped and their logs are complete
    problems = made.log_verdict()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
