"""`nydusfs stats` on real FUSE mounts through the real CLI: the first-read order and byte
counts of a local mount, the prefetch list fed back to `convert --prefetch-patterns`, names the
terminal must not interpret, and the errors of a mountpoint without a running nydusfs server.
The registry side is in test_stats_registry.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import needs_fuse, needs_root
from corpus import Layer, pattern
from imagekit import nydusfs, umoci_image
from mount_helpers import process_alive

pytestmark = [needs_root, needs_fuse]

# distinct contents (no chunk shared between files); one file spans two 1 MiB chunks
FILES = {"etc/a.conf": pattern(5_000, 1), "usr/bin/tool": pattern(1_500_000, 2),
         "usr/lib/libx.so": pattern(200_000, 3), "srv/data/z.bin": pattern(70_000, 4),
         "srv/unread": pattern(9_000, 5)}
ORDER = ["usr/lib/libx.so", "etc/a.conf", "srv/data/z.bin", "usr/bin/tool"]


def _image(tmp_path, files: dict, fs_version: str = "6") -> tuple[str, str]:
    layer = Layer()
    for name, data in files.items():
        layer.file(name, data)
    src = umoci_image(tmp_path / "src", "v1", [layer], tmp_path / "work")
    out = f"oci:{tmp_path / 'nydus'}:v1"
    r = nydusfs("convert", src, out, "--no-progress", "--fs-version", fs_version)
    assert r.returncode == 0, r.stderr
    return src, out


def _stats(m, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*nydusfs_argv(), "stats", str(m.path), "--pid-file", str(m.pid_file),
                           *args], capture_output=True, timeout=60)


def nydusfs_argv() -> list[str]:
    import sys
    return [sys.executable, "-m", "nydusfs"]


def _chunks_by_path(image: str) -> dict[str, list[dict]]:
    r = nydusfs("dump", image, "--json")
    assert r.returncode == 0, r.stderr
    return {n["path"]: n["chunks"] for n in json.loads(r.stdout)["inodes"]}


@pytest.mark.parametrize("fs_version", ["5", "6"])
def test_first_read_order_and_byte_counts(tmp_path, mounts, fs_version):
    _, image = _image(tmp_path, FILES, fs_version)
    m = mounts.mount(image, "--no-prefetch")
    for name in ORDER:
        assert (m.path / name).read_bytes() == FILES[name]
    (m.path / "srv/unread").stat()                     # metadata only: not a read
    r = _stats(m, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["first_reads"]] == ["/" + n for n in ORDER]
    times = [f["seconds"] for f in doc["first_reads"]]
    assert times == sorted(times) and 0 <= times[0] <= doc["seconds"]
    totals = doc["totals"]
    assert totals["read_bytes"] == sum(len(FILES[n]) for n in ORDER)
    assert totals["files_read"] == len(ORDER) and not doc["first_reads_truncated"]
    assert doc["registry"] is False and "registry" not in totals
    # blob side, against the chunk records `dump` reads from the bootstrap: every chunk of the
    # files read was loaded once (the chunk cache holds them all), its stored bytes read once
    chunks = _chunks_by_path(image)
    wanted = [c for n in ORDER for c in chunks["/" + n]]
    assert len(wanted) == len(ORDER) + 1
    by_blob: dict[int, list[dict]] = {}
    for c in wanted:
        by_blob.setdefault(c["blob_index"], []).append(c)
    rows = {b["index"]: b for b in doc["blobs"]}
    for index, cs in by_blob.items():
        row = rows[index]
        assert row["blob_id"] == cs[0]["blob_id"]
        assert row["chunk_misses"] == len(cs) and row["errors"] == 0
        assert row["bytes"] == sum(c["compressed_size"] for c in cs)
        assert row["reads"] == len(cs)
    assert totals["bytes"] == sum(c["compressed_size"] for c in wanted)
    # reading again is served by the kernel's page cache (keep_cache): nothing new recorded
    (m.path / ORDER[0]).read_bytes()
    again = json.loads(_stats(m, "--json").stdout)
    assert again["first_reads"] == doc["first_reads"]
    # the table names every file read, in order
    table = _stats(m)
    assert table.returncode == 0, table.stderr
    text = table.stdout.decode()
    positions = [text.index("/" + n) for n in ORDER]
    assert positions == sorted(positions) and "/srv/unread" not in text


def test_prefetch_list_makes_that_prefetch_table(tmp_path, mounts):
    src, image = _image(tmp_path, FILES)
    m = mounts.mount(image, "--no-prefetch")
    for name in ORDER:
        (m.path / name).read_bytes()
    r = _stats(m, "--prefetch-list")
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout == b"".join(b"/" + n.encode() + b"\n" for n in ORDER)
    listing = tmp_path / "prefetch.txt"
    listing.write_bytes(r.stdout)
    out = f"oci:{tmp_path / 'again'}:v1"
    done = nydusfs("convert", src, out, "--no-progress", "--prefetch-patterns", str(listing))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    dump = nydusfs("dump", out, "--json", "--no-chunks")
    assert dump.returncode == 0, dump.stderr
    assert [p["path"] for p in json.loads(dump.stdout)["prefetch"]] == ["/" + n for n in ORDER]


ODD = {b"dir/evil\x1b[2J\x07name": pattern(3_000, 7), b"dir/new\nline": pattern(4_000, 8),
       b"dir/caf\xe9": pattern(5_000, 9), b"dir/trailing ": pattern(6_000, 10),
       b"dir/plain": pattern(7_000, 11)}


def test_odd_names_escaped_and_left_out_of_the_prefetch_list(tmp_path, mounts):
    layer = Layer()
    for name, data in ODD.items():
        layer.file(name, data)
    src = umoci_image(tmp_path / "src", "v1", [layer], tmp_path / "work")
    image = f"oci:{tmp_path / 'nydus'}:v1"
    assert nydusfs("convert", src, image, "--no-progress").returncode == 0
    m = mounts.mount(image, "--no-prefetch")
    order = list(ODD)
    for name in order:
        with open(os.path.join(os.fsencode(m.path), name), "rb") as f:
            assert f.read() == ODD[name]
    # JSON: exact names, os.fsdecode-encoded
    doc = json.loads(_stats(m, "--json").stdout)
    assert [os.fsencode(f["path"]) for f in doc["first_reads"]] == [b"/" + n for n in order]
    # the table: no byte a terminal acts on; the escapes instead
    table = _stats(m)
    assert table.returncode == 0, table.stderr
    assert b"\x1b" not in table.stdout and b"\x07" not in table.stdout
    text = table.stdout.decode("utf-8")
    assert "evil\\x1b[2J\\x07name" in text and "new\\x0aline" in text and "caf\\xe9" in text
    # the prefetch list: what the pattern format can hold, the rest named (escaped) on stderr
    r = _stats(m, "--prefetch-list")
    assert r.returncode == 0, r.stderr
    kept = [b"/dir/evil\x1b[2J\x07name", b"/dir/caf\xe9", b"/dir/plain"]
    assert r.stdout == b"".join(k + b"\n" for k in kept)
    warnings = r.stderr.decode().splitlines()
    assert len(warnings) == 2 and b"\x1b" not in r.stderr, warnings
    assert "/dir/new\\x0aline" in warnings[0] and "/dir/trailing " in warnings[1]
    listing = tmp_path / "prefetch.txt"
    listing.write_bytes(r.stdout)
    out = f"oci:{tmp_path / 'again'}:v1"
    done = nydusfs("convert", src, out, "--no-progress", "--prefetch-patterns", str(listing))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    dump = json.loads(nydusfs("dump", out, "--json", "--no-chunks").stdout)
    assert [os.fsencode(p["path"]) for p in dump["prefetch"]] == kept


def _one_error_line(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2 and r.stdout == b"", r
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nydusfs stats: error: ") and text in lines[0], lines


def test_not_a_nydusfs_mount(tmp_path):
    (tmp_path / "plain").mkdir()
    _one_error_line(subprocess.run([*nydusfs_argv(), "stats", str(tmp_path / "plain")],
                                   capture_output=True, timeout=60), "not mounted")
    _one_error_line(subprocess.run([*nydusfs_argv(), "stats", "/proc"], capture_output=True,
                                   timeout=60), "not a nydusfs mount")


def test_dead_server_and_socket_lifecycle(tmp_path, mounts):
    _, image = _image(tmp_path, {"f": b"x"})
    m = mounts.mount(image)
    sock = tmp_path / (m.pid_file.stem + ".sock")
    assert sock.exists() and (sock.stat().st_mode & 0o777) == 0o600
    # a clean stop removes the socket with the pid file
    assert nydusfs("umount", str(m.path), "--pid-file", str(m.pid_file)).returncode == 0
    assert not sock.exists() and not m.pid_file.exists()
    # a server killed outright leaves a dead mount (and a stale socket): one line, exit 2
    m = mounts.mount(image)
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    while process_alive(pid):
        time.sleep(0.01)
    _one_error_line(_stats(m), "its server is gone")


def test_socket_path_longer_than_sun_path(tmp_path, mounts):
    """A pid file deep enough that its socket path exceeds the kernel's 107 bytes: the server
    binds and the client connects through /proc/self/fd; a long name is hashed."""
    _, image = _image(tmp_path, {"f": pattern(1_000, 30)})
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    m = mounts.mount(image, "--no-prefetch")
    assert nydusfs("umount", str(m.path), "--pid-file", str(m.pid_file)).returncode == 0
    pid_file = deep / ("p" * 80 + ".pid")
    done = nydusfs("mount", image, str(m.path), "--no-prefetch", "--pid-file", str(pid_file),
                   "--log-file", str(m.log_file))
    assert done.returncode == 0, done.stderr
    m.pid_file = pid_file
    assert (m.path / "f").read_bytes() == pattern(1_000, 30)
    socks = [p.name for p in deep.iterdir() if p.name.endswith(".sock")]
    assert len(socks) == 1 and socks[0].startswith("control-"), socks
    doc = json.loads(_stats(m, "--json").stdout)
    assert [f["path"] for f in doc["first_reads"]] == ["/f"]


def test_bad_control_clients_do_not_hurt_the_mount(tmp_path, mounts):
    """Garbage, an oversized request and a client that never speaks get an error or nothing;
    the mount and later stats requests keep working."""
    import socket

    _, image = _image(tmp_path, {"f": pattern(2_000, 31)})
    m = mounts.mount(image, "--no-prefetch")
    path = str(tmp_path / (m.pid_file.stem + ".sock"))
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(path)                    # holds a connection open, says nothing
    answers = []
    for request in (b"not json\n", b'{"request": "format-disk"}\n', b"x" * 10_000):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(30)
        c.connect(path)
        c.sendall(request)
        answers.append(json.loads(c.makefile("rb").readline()))
        c.close()
    assert all(set(a) == {"error"} for a in answers), answers
    assert (m.path / "f").read_bytes() == pattern(2_000, 31)
    doc = json.loads(_stats(m, "--json").stdout)
    assert [f["path"] for f in doc["first_reads"]] == ["/f"]
    silent.close()
