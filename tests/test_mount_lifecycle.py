"""Starting and stopping: background and foreground servers, pid files, `nydusfs umount`,
signals during reads, stale and busy mounts, mount options, and errors without tracebacks."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import threading

import pytest

from conftest import needs_root
from corpus import pattern
from mount_helpers import NYDUSFS, Built, ImageBuilder, Mount, Mounts, is_ours_mounted, nydusfs
from nydusfs.fuse.mounts import (default_pid_file, mount_entry, process_alive, read_pid_file,
                                 wait_gone)

pytestmark = needs_root



@pytest.fixture
def built(tmp_path: pathlib.Path) -> Built:
    b = ImageBuilder(version=6, chunk_size=0x10000)
    for i in range(4):
        b.file(f"big{i}", pattern(4 << 20, i))
    b.file("small", b"small\n")
    b.prefetch("/big1", "/small")
    return b.build(tmp_path / "img")


def options(path: pathlib.Path) -> set[str]:
    e = mount_entry(str(path))
    assert e is not None
    return set(e.options.split(","))


def assert_clean_error(done: subprocess.CompletedProcess, *words: str) -> str:
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, err
    assert err.startswith("nydusfs ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_background_mount_pid_file_and_umount(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    pid, where = read_pid_file(str(m.pid_file))
    assert where == str(m.path) and process_alive(pid) and pid != os.getpid()
    assert (m.path / "small").read_bytes() == b"small\n"
    assert {"ro", "nosuid", "nodev"} <= options(m.path)
    done = nydusfs("umount", m.path, "--pid-file", m.pid_file)
    assert done.returncode == 0, done.stderr
    assert not is_ours_mounted(m.path)
    assert not process_alive(pid)                     # umount waited for the server
    assert not m.pid_file.exists()
    assert os.listdir(m.path) == []                   # the plain directory again


def test_default_pid_file_lets_umount_wait(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, default_files=True)
    assert m.pid_file == pathlib.Path(default_pid_file(str(m.path)))
    pid, where = read_pid_file(str(m.pid_file))
    assert where == str(m.path) and process_alive(pid)
    assert nydusfs("umount", m.path).returncode == 0
    assert not process_alive(pid) and not is_ours_mounted(m.path)
    assert not m.pid_file.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_stops_cleanly_on_signal(mounts: Mounts, built: Built, sig: int) -> None:
    m = mounts.foreground(built.bootstrap, "--blob-dir", built.blob_dir)
    assert (m.path / "small").read_bytes() == b"small\n"
    assert m.proc is not None
    m.proc.send_signal(sig)
    assert m.proc.wait(timeout=30) == 0
    assert not is_ours_mounted(m.path)
    assert not m.pid_file.exists()
    assert m.proc.stderr is not None and b"Traceback" not in m.proc.stderr.read()


def test_sigterm_during_reads_leaves_no_stale_mount(mounts: Mounts, built: Built) -> None:
    """Readers hammer the mount (O_DIRECT: every read reaches the server) when SIGTERM lands.
    The server unmounts and exits; every reader finishes (data or an error, never a hang)."""
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--cache-size", "0")
    pid = m.pid
    started = threading.Barrier(5)
    outcome: list[object] = []

    def read_forever(i: int) -> None:
        path = m.path / f"big{i}"
        want = pattern(4 << 20, i)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        started.wait()
        try:
            pos = 0
            while True:
                got = os.pread(fd, 1 << 20, pos)
                assert got == want[pos:pos + len(got)]
                pos = (pos + len(got)) % len(want)
        except OSError as e:
            outcome.append(e.errno)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass          # FLUSH on a connection that is gone: ENOTCONN

    threads = [threading.Thread(target=read_forever, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 30)
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert len(outcome) == 4                          # all ended with an OSError, none hung
    assert set(outcome) <= {errno.ENOTCONN, errno.EIO, errno.ECONNABORTED, errno.ENODEV}
    assert not is_ours_mounted(m.path)
    assert os.listdir(m.path) == []                   # no "Transport endpoint is not connected"
    assert not m.pid_file.exists()


def test_killed_server_leaves_a_stale_mount_that_umount_removes(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 30)
    with pytest.raises(OSError) as e:
        os.listdir(m.path)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    again = nydusfs("mount", built.bootstrap, m.path, "--blob-dir", built.blob_dir)
    assert_clean_error(again, "dead FUSE mount", "nydusfs umount")
    assert nydusfs("umount", m.path, "--pid-file", m.pid_file).returncode == 0
    assert not is_ours_mounted(m.path) and os.listdir(m.path) == []


def test_busy_mount_needs_lazy(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    pid = m.pid
    with open(m.path / "small", "rb") as f:
        assert_clean_error(nydusfs("umount", m.path, "--pid-file", m.pid_file), "busy", "--lazy")
        assert is_ours_mounted(m.path)
        assert nydusfs("umount", m.path, "--lazy", "--pid-file", m.pid_file).returncode == 0
        assert not is_ours_mounted(m.path)
        assert f.read() == b"small\n"                 # the open file keeps working
    assert wait_gone(pid, 30)                         # last user gone: the server stops


def test_mount_options(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--suid", "--dev",
                     "--allow-other")
    opts = options(m.path)
    assert "ro" in opts and "nosuid" not in opts and "nodev" not in opts
    e = mount_entry(str(m.path))
    assert e is not None and e.fstype == "fuse.nydusfs" and e.source == "nydusfs:image.boot"
    with open("/proc/self/mountinfo") as f:
        line = next(line for line in f if f" {m.path} " in line)
    assert "allow_other" in line and "default_permissions" in line
    # the server raised its readahead so that sequential reads come as chunk-sized requests
    # (where sysfs is writable: containers often mount it read-only)
    dev = os.stat(m.path).st_dev
    bdi = pathlib.Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    if os.access(bdi, os.W_OK):
        assert bdi.read_text().strip() == "1024"


def test_prefetch_warms_the_listed_files(mounts: Mounts, built: Built) -> None:
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir, "--cache-size", "2M")
    chunks = sum(len(built.tree.lookup(p).chunks) for p in (b"/big1", b"/small"))
    log = m.wait_log("prefetch done")
    assert "warming the files of 2 prefetch table entries" in log
    assert f"prefetch done: {chunks} of {chunks} chunks fetched" in log, log
    # within the budget (half the cache) chunks are decompressed, the rest only read
    warmed = int(log.split("chunks fetched, ")[1].split(" bytes")[0])
    assert 0 < warmed <= 1 << 20
    assert (m.path / "big1").read_bytes() == pattern(4 << 20, 1)


def test_prefetch_of_a_missing_blob_is_logged_once(mounts: Mounts, built: Built) -> None:
    built.blob_files[0].rename(built.blob_files[0].with_name("elsewhere"))
    mounts.expect_log(rf"ERROR prefetch: blob {built.tree.blobs[0].blob_id}: blob file not found")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    log = m.wait_log("prefetch done")
    assert log.count(built.tree.blobs[0].blob_id) == 1, log
    assert os.listdir(m.path)


def test_no_prefetch(mounts: Mounts, built: Built) -> None:
    m = mounts.foreground(built.bootstrap, "--blob-dir", built.blob_dir, "--no-prefetch")
    assert (m.path / "small").read_bytes() == b"small\n"
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=30) == 0
    assert "prefetch:" not in m.log()


def test_errors_are_one_line_and_leave_nothing_mounted(mounts: Mounts, built: Built,
                                                       tmp_path: pathlib.Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    assert_clean_error(nydusfs("mount", tmp_path / "nope.boot", mp), "nope.boot")
    assert_clean_error(nydusfs("mount", built.bootstrap, tmp_path / "nodir"), "nodir")
    (tmp_path / "file").write_bytes(b"x")
    assert_clean_error(nydusfs("mount", built.bootstrap, tmp_path / "file"), "not a directory")
    assert_clean_error(nydusfs("mount", tmp_path / "file", mp), "file")
    assert_clean_error(nydusfs("mount", built.bootstrap, mp, "--blob-dir", tmp_path / "nodir"),
                       "--blob-dir")
    assert nydusfs("mount", built.bootstrap, mp, "--cache-size", "lots").returncode == 2
    # this one fails after the mount went live: it must be taken down again
    assert_clean_error(nydusfs("mount", built.bootstrap, mp, "--pid-file",
                               tmp_path / "nodir" / "x.pid"), "pid file")
    assert not is_ours_mounted(mp)
    assert not (tmp_path / "nodir").exists()
    assert_clean_error(nydusfs("umount", mp), "not mounted")
    m = mounts.mount(built.bootstrap, "--blob-dir", built.blob_dir)
    assert_clean_error(nydusfs("mount", built.bootstrap, m.path), "already mounted")
    assert_clean_error(nydusfs("umount", "/proc"), "not a nydusfs mount")


def test_help_texts() -> None:
    for verb in ("mount", "umount"):
        done = nydusfs(verb, "--help")
        assert done.returncode == 0
        assert b"default" in done.stdout and len(done.stdout) > 800


def test_odd_mountpoint_and_relative_paths(mounts: Mounts, built: Built, tmp_path: pathlib.Path) -> None:
    """Spaces, commas and backslashes in the mountpoint (escaped in the mount table), relative
    paths (the background server runs in /)."""
    mp = tmp_path / "with space,comma\\back"
    mp.mkdir()
    rel = os.path.relpath(built.bootstrap, tmp_path)
    done = subprocess.run(NYDUSFS + ["mount", rel, mp.name, "--blob-dir",
                                     os.path.relpath(built.blob_dir, tmp_path),
                                     "--pid-file", "odd.pid"], cwd=tmp_path, capture_output=True)
    mounts.made.append(Mount(mp, tmp_path / "odd.pid", tmp_path / "odd.log"))
    assert done.returncode == 0, done.stderr
    assert is_ours_mounted(mp)
    assert (mp / "big0").read_bytes()[:100] == pattern(4 << 20, 0)[:100]
    assert read_pid_file(str(tmp_path / "odd.pid"))[1] == str(mp)
    done = subprocess.run(NYDUSFS + ["umount", mp.name, "--pid-file", "odd.pid"], cwd=tmp_path,
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    assert not is_ours_mounted(mp)
