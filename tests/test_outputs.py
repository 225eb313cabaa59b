"""Outputs are written whole or not at all (nydusfs/util/output.py), by every verb that writes:
paths that collide or equal an input and existing non-regular files are usage errors, no
directory is left that the user did not ask for, the umask is respected, and SIGTERM cleans
up like Ctrl-C - also the FUSE mount of `check --through-mount`. Real processes, real signals."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import tarfile
import time

import pytest

import corpus
from conftest import needs_root
from mount_helpers import NYDUSFS, nydusfs
from nydusfs.fuse.mounts import process_alive


def _layer(tmp: pathlib.Path, name: str = "layer.tar") -> pathlib.Path:
    path = tmp / name
    path.write_bytes(corpus.Layer().file("a", b"alpha").file("b/c", corpus.pattern(300_000)).tar())
    return path


def _fails_with(done: subprocess.CompletedProcess, text: str) -> None:
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert len(err.splitlines()) == 1 and text in err and "Traceback" not in err, err


def _files(d: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_create_outputs_that_collide_are_usage_errors(tmp_path: pathlib.Path) -> None:
    layer = _layer(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    _fails_with(nydusfs("create", layer, "--bootstrap", out / "x", "--blob", out / "x"),
                "--blob " + str(out / "x") + ": is also another output (--bootstrap")
    _fails_with(nydusfs("create", layer, "--bootstrap", out / "x", "--blob", out / ".." / "out" / "x"),
                "is also another output")
    _fails_with(nydusfs("create", layer, "-o", out / "l", "--output-json", out / "l"), "is also another output")
    _fails_with(nydusfs("create", layer, "-o", layer), "is also an input (SOURCE")
    os.link(layer, tmp_path / "hardlink")        # another name of the input is the input too
    _fails_with(nydusfs("create", layer, "-o", tmp_path / "hardlink"), "is also an input")
    assert _files(out) == []


def test_merge_dump_and_check_refuse_outputs_equal_to_inputs(tmp_path: pathlib.Path) -> None:
    layer = _layer(tmp_path)
    boot = tmp_path / "l.boot"
    assert nydusfs("create", layer, "--bootstrap", boot, "--blob-dir", tmp_path / "blobs").returncode == 0
    _fails_with(nydusfs("merge", boot, "--bootstrap", tmp_path / "m", "--output-json", tmp_path / "m"),
                "is also another output (--bootstrap")
    _fails_with(nydusfs("dump", boot, "--output", boot), "is also an input (BOOTSTRAP")
    _fails_with(nydusfs("check", boot, "--layers", layer, "--json", layer), "is also an input (--layers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "l.boot", "layer.tar"]


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo", "device"])
def test_existing_outputs_that_are_not_regular_files_are_refused(tmp_path: pathlib.Path, kind: str) -> None:
    layer = _layer(tmp_path)
    target = tmp_path / "target"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    if kind == "symlink":
        target.symlink_to(victim)
    elif kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target = pathlib.Path("/dev/null")
    for argv in (["create", layer, "-o", target], ["create", layer, "--bootstrap", target, "--blob", tmp_path / "b"],
                 ["dump", _boot(tmp_path, layer), "-o", target]):
        _fails_with(nydusfs(*argv), "exists and is a")
    assert victim.read_bytes() == b"keep"
    assert os.path.islink(target) if kind == "symlink" else True
    assert not (tmp_path / "b").exists()


def _boot(tmp: pathlib.Path, layer: pathlib.Path) -> pathlib.Path:
    boot = tmp / "made.boot"
    if not boot.exists():
        assert nydusfs("create", layer, "--bootstrap", boot, "--blob-dir", tmp / "made-blobs").returncode == 0
    return boot


def test_no_directory_is_made_for_a_file_output(tmp_path: pathlib.Path) -> None:
    layer = _layer(tmp_path)
    _fails_with(nydusfs("create", layer, "-o", tmp_path / "newdir" / "sub" / "x"), "does not exist")
    _fails_with(nydusfs("dump", _boot(tmp_path, layer), "--json", "-o", tmp_path / "newdir" / "x.json"),
                "does not exist")
    assert not (tmp_path / "newdir").exists()


def test_a_blob_dir_made_by_a_failed_create_is_removed(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.tar"
    raw = _layer(tmp_path).read_bytes()
    bad.write_bytes(raw[:len(raw) // 2])     # ends inside the data of b/c
    done = nydusfs("create", bad, "--bootstrap", tmp_path / "x.boot", "--blob-dir", tmp_path / "new" / "blobs")
    assert done.returncode == 2
    assert not (tmp_path / "new").exists() and not (tmp_path / "x.boot").exists()
    ok = nydusfs("create", _layer(tmp_path, "good.tar"), "--bootstrap", tmp_path / "x.boot",
                 "--blob-dir", tmp_path / "new" / "blobs")
    assert ok.returncode == 0 and len(os.listdir(tmp_path / "new" / "blobs")) == 1


def test_outputs_get_the_umask_mode(tmp_path: pathlib.Path) -> None:
    layer = _layer(tmp_path)
    boot = _boot(tmp_path, layer)
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        out = tmp_path / f"d{umask:o}.json"
        lay = tmp_path / f"l{umask:o}"
        cmd = f"umask {umask:o} && exec \"$@\""
        for argv in (["dump", boot, "--json", "-o", out], ["create", layer, "-o", lay]):
            done = subprocess.run(["sh", "-c", cmd, "sh", *NYDUSFS, *map(str, argv)], capture_output=True)
            assert done.returncode == 0, done.stderr
        assert (out.stat().st_mode & 0o777, lay.stat().st_mode & 0o777) == (mode, mode)
    assert out.read_text().startswith("{") and tarfile.is_tarfile(lay)


def test_sigterm_during_create_leaves_nothing(tmp_path: pathlib.Path) -> None:
    """create reads the layer from a pipe that stalls halfway; SIGTERM then must remove the
    temporary output (and the blob directory create made), exit 143, and print no traceback."""
    out = tmp_path / "out"
    out.mkdir()
    tar = _layer(tmp_path).read_bytes()
    proc = subprocess.Popen(NYDUSFS + ["create", "-", "--bootstrap", str(out / "x.boot"),
                                       "--blob-dir", str(out / "blobs")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(tar[:len(tar) // 2])
    proc.stdin.flush()
    _wait_for(lambda: any(p.name.endswith(".tmp") for p in out.rglob("*")), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = proc.stderr.read().decode()
    proc.stdin.close()
    assert "Traceback" not in err, err
    assert _files(out) == []


def _many_files(tmp: pathlib.Path) -> pathlib.Path:
    layer = tmp / "big.tar"
    big = corpus.Layer()
    for i in range(3000):
        big.file(f"d{i % 30}/f{i}", b"%d" % i)
    layer.write_bytes(big.tar())
    return _boot(tmp, layer)


def test_sigterm_during_dump_output_leaves_nothing(tmp_path: pathlib.Path) -> None:
    """dump -o writes while it reads; stopped halfway and sent SIGTERM, it leaves nothing."""
    boot = _many_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(NYDUSFS + ["dump", str(boot), "-o", str(out / "d.txt")], stderr=subprocess.PIPE)
    _wait_for(lambda: any(p.stat().st_size for p in out.iterdir()), proc)
    os.kill(proc.pid, signal.SIGSTOP)        # halfway through, whatever the machine's speed
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=60) == 143
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read().decode()
    assert _files(out) == []


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, "the process ended before the condition was met"
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _fuse_mounts_under(top: pathlib.Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(str(top))]


@needs_root
def test_sigterm_during_check_through_mount_takes_everything_down(tmp_path: pathlib.Path) -> None:
    """The check is stopped as soon as it has started its mount server, then sent SIGTERM once
    the image is mounted: the mount, the server and the temporary mountpoint must all go."""
    layer = _layer(tmp_path)
    boot = _boot(tmp_path, layer)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    proc = subprocess.Popen(NYDUSFS + ["check", str(boot), "--blob-dir", str(tmp_path / "made-blobs"),
                                       "--layers", str(layer), "--through-mount", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _children(proc.pid), proc)
        os.kill(proc.pid, signal.SIGSTOP)
        server = _children(proc.pid)[0]
        deadline = time.monotonic() + 60
        while not _fuse_mounts_under(tmpdir):
            assert process_alive(server) and time.monotonic() < deadline, "the mount never came up"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        for point in _fuse_mounts_under(tmpdir):      # never leave a mount behind a failed test
            subprocess.run(["umount", "-l", point])
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read().decode()
    assert _fuse_mounts_under(tmpdir) == []
    deadline = time.monotonic() + 10
    while process_alive(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_alive(server)
    assert os.listdir(tmpdir) == []


@needs_root
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: pathlib.Path) -> None:
    """create and dump onto a 64 KiB tmpfs: ENOSPC while writing is a one-line error."""
    layer = _layer(tmp_path)
    boot = _many_files(tmp_path)       # its JSON dump is larger than the file system
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        _fails_with(nydusfs("create", layer, "-o", small / "x", "--compressor", "none"),
                    "cannot write: No space left on device")
        _fails_with(nydusfs("dump", boot, "--json", "-o", small / "d.json"), "cannot write: No space left on device")
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
