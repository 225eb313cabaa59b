"""The one rule for missing prerequisites (tests/conftest.py `unavailable`), run on a small suite
in a child pytest: fixtures that are not there fail under CI=true and skip loudly outside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT

PROBE = """
from conftest import fixture_path, needs_tool

def test_wants_fixtures():
    fixture_path("bootstrap/rafs-v6-2.2.boot")

@needs_tool("no-such-tool-anywhere")
def test_wants_a_tool():
    pass
"""


def run_probe(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["NYDUSFS_SHARED"] = str(tmp_path / "nowhere")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          check=False)


def test_outside_ci_missing_things_skip_with_one_loud_line_each(tmp_path):
    done = run_probe(tmp_path, None)
    assert done.returncode == 0, done.stdout
    assert "2 skipped" in done.stdout
    loud = [line for line in done.stdout.splitlines() if line.startswith("!!! NOT TESTED")]
    assert len(loud) == 2, done.stdout
    assert any("upstream fixtures not found" in line for line in loud)
    assert any("no-such-tool-anywhere not installed" in line for line in loud)


def test_under_ci_missing_things_fail(tmp_path):
    done = run_probe(tmp_path, "true")
    assert done.returncode == 1, done.stdout
    # the fixture is missing inside the test (a failure), the tool at setup (an error): both fail
    assert "1 failed, 1 error" in done.stdout
    assert "CI=true and upstream fixtures not found" in done.stdout
    assert "CI=true and no-such-tool-anywhere not installed" in done.stdout
