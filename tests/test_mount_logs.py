"""The rule of the mount tests' autouse log check (conftest.server_logs_are_clean), on logs
written here in the server's format: warnings and errors fail a test unless declared, and a
declared line that never came fails it too."""

from __future__ import annotations

import pathlib

from mount_helpers import Mount, Mounts, logged_problems

LOG = """\
2026-01-01 10:00:00,001 nydusfs[42] INFO serving /mnt (RAFS v6, 3 inodes)
2026-01-01 10:00:00,002 nydusfs[42] WARNING no pid file (cannot write /run/x.pid: Permission denied)
2026-01-01 10:00:00,003 nydusfs[42] ERROR read: inode 7: blob ab12: blob file not found (looked in: /b)
Traceback (most recent call last):
2026-01-01 10:00:00,004 nydusfs[42] DEBUG lookup(1, b'ERROR')
"""


def made(tmp_path: pathlib.Path, log: str) -> Mounts:
    mounts = Mounts(tmp_path)
    m = Mount(tmp_path / "mnt", tmp_path / "pid", tmp_path / "log")
    m.log_file.write_text(log)
    mounts.made.append(m)
    return mounts


def test_problem_lines_are_warnings_errors_and_tracebacks():
    levels = [line.split(" ", 4)[3] for line in logged_problems(LOG) if "nydusfs[" in line]
    assert levels == ["WARNING", "ERROR"]
    assert "Traceback (most recent call last):" in logged_problems(LOG)


def test_undeclared_lines_fail(tmp_path):
    verdict = made(tmp_path, LOG).log_verdict()
    assert len(verdict) == 3 and all(v.startswith("unexpected server log line: ") for v in verdict)


def test_declared_lines_pass_and_unmet_declarations_fail(tmp_path):
    mounts = made(tmp_path, LOG)
    mounts.expect_log(r"WARNING no pid file")
    mounts.expect_log(r"ERROR read: inode \d+: blob ab12: blob file not found")
    mounts.expect_log(r"^Traceback")
    assert mounts.log_verdict() == []
    mounts.expect_log(r"digest mismatch")
    assert mounts.log_verdict() == [
        "expected a server log line matching 'digest mismatch', none was logged"]


def test_a_clean_log_passes(tmp_path):
    assert made(tmp_path, LOG.splitlines()[0] + "\n").log_verdict() == []
