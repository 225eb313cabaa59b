"""Run nydusfs in a child process under a memory ceiling and a time limit, and check that it
answered like a tool and not like a crash: exit 0/1, or exit 2 with one line and no traceback.

The ceiling is on address space (RLIMIT_AS), with glibc's per-thread malloc arenas capped so
that thread pools do not reserve address space they never use.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from typing import Any

MEMORY_CEILING = 1 << 30     # bytes of address space a verb may use on a small hostile input
TIME_LIMIT = 60              # seconds before a run counts as a hang

BASE_ENV = {"MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}


def _limit(ceiling: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    return apply


def run(*args: Any, ceiling: int = MEMORY_CEILING, timeout: float = TIME_LIMIT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`nydusfs ARGS` under the ceiling; a timeout raises subprocess.TimeoutExpired."""
    argv = [sys.executable, "-m", "nydusfs"] + [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                                                for a in args]
    full_env = dict(os.environ) | BASE_ENV | (env or {})
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=full_env,
                          preexec_fn=_limit(ceiling), stdin=subprocess.DEVNULL, check=False)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]


def assert_clean(proc: subprocess.CompletedProcess, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """Exit 0/1 (any output), or 2 with exactly one line on stderr; never a traceback."""
    text = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode in allowed, (proc.returncode, text[-3000:])
    if proc.returncode == 2:
        lines = stderr_lines(proc)
        assert len(lines) == 1, lines[:10]


def assert_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, one line naming each of `words`; returns the line."""
    assert_clean(proc, (2,))
    line = stderr_lines(proc)[0]
    for w in words:
        assert w in line, line
    return line
