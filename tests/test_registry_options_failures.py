"""Every verb that takes an image reference, on each way a docker:// reference can fail: a
malformed reference, an unknown repository, an unknown tag, wrong credentials (Basic over TLS
and bearer tokens) and a registry that is down. Each is exactly one line on stderr naming the
reference and what failed, exit status 2, no traceback, and nothing left behind (no output
file, no target written, nothing mounted)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import needs_fuse, needs_root
from mount_helpers import is_ours_mounted
from registry_helpers import USER, Registry, free_port
from test_registry_options import clean_env, push

pytest_plugins = ["registry_fixtures"]
pytestmark = [needs_root]

KINDS = ["malformed", "unknown-repo", "unknown-tag", "wrong-basic", "wrong-token", "down"]
VERBS = ["convert", "check", "dump", pytest.param("mount", marks=needs_fuse), "unpack", "explore", "diff"]
WRONG = "not-the-password"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from test_registry_options import _nydus_layout

    return _nydus_layout(tmp_path_factory.mktemp("images"))


def failing(kind: str, request: pytest.FixtureRequest, images: pathlib.Path) -> tuple[str, list[str], str]:
    """(reference, registry options, what the message must say) for one kind of failure."""
    if kind == "malformed":
        return "docker://127.0.0.1:1/Bad_Repo:v1", [], "repository component"
    if kind == "down":
        return f"docker://127.0.0.1:{free_port()}/app:v1", [], "cannot reach the registry"
    reg: Registry = request.getfixturevalue(
        {"unknown-repo": "anon_registry", "unknown-tag": "anon_registry", "wrong-basic": "basic_registry",
         "wrong-token": "token_registry"}[kind])
    _, nydus = push(images, reg)
    if kind == "unknown-repo":
        return f"docker://{reg.host}/no/such/repo:v1", [], "not found"
    if kind == "unknown-tag":
        return nydus.replace(":v1-nydus", ":no-such-tag"), [], "not found"
    opts = ["--creds", f"{USER}:{WRONG}"]
    if reg.kind == "basic":
        opts += ["--cert-dir", str(reg.cert_dir)]
    return nydus, opts, f"'{USER}'"


def command(verb: str, ref: str, tmp: pathlib.Path) -> tuple[list[str], list[pathlib.Path]]:
    """The verb's command line and the paths it must not leave behind."""
    out = tmp / "out"
    if verb == "convert":
        return ["convert", ref, f"oci:{out}:n", "--no-progress"], [out]
    if verb == "check":
        return ["check", ref, "--json", str(out)], [out]
    if verb == "dump":
        return ["dump", ref, "--json", "-o", str(out)], [out]
    if verb == "mount":
        (tmp / "mnt").mkdir()
        return ["mount", ref, str(tmp / "mnt"), "--pid-file", str(tmp / "pid")], [tmp / "pid"]
    if verb == "unpack":
        return ["unpack", ref, "-o", str(out)], [out]
    if verb == "explore":
        return ["explore", ref, "--json"], []
    return ["diff", ref, ref, "--json"], []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("verb", VERBS)
def test_one_line_and_nothing_left(verb: str, kind: str, request: pytest.FixtureRequest,
                                   images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    ref, opts, what = failing(kind, request, images)
    args, outputs = command(verb, ref, tmp_path)
    env = clean_env(tmp_path)
    before = set(os.listdir(tmp_path))
    done = subprocess.run([sys.executable, "-m", "nydusfs", *args, *opts], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith(f"nydusfs {verb}: error: ") and "Traceback" not in line
    assert ref in line, line                 # the reference as given
    assert what in line, line                # and what failed
    assert WRONG not in line
    for path in outputs:
        assert not path.exists(), f"{path} left behind"
    assert set(os.listdir(tmp_path)) - before <= {"cache"}, "files left behind"
    if verb == "mount":
        assert not is_ours_mounted(tmp_path / "mnt")
        assert not os.listdir(tmp_path / "mnt")
