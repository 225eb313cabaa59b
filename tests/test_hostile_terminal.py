"""Names, symlink targets and xattrs of an image reach a terminal escaped: dump and check
tables, create and merge warnings, error messages and mount logs hold no control character
(ESC, C1, other C0), no bidi override and no invalid UTF-8, and rich markup in a name is shown,
not interpreted. JSON output keeps the exact values."""

from __future__ import annotations

import json
import os
import struct
import unicodedata

import hostile
import pytest
from conftest import needs_root
from hostile import member, no_control_bytes, one_line_error, run
from hypothesis import given
from hypothesis import strategies as st

from nydusfs.reader import open_image
from nydusfs.util.show import printable

# an OSC title change, clear screen, a C1 CSI (as UTF-8 and as a raw byte), invalid UTF-8,
# a right-to-left override, and rich markup (including a closing tag rich would reject)
EVIL = b"e\x1b]0;owned\x07\x1b[2J\xc2\x9b31m\x9b\xff\xe2\x80\xae[bold red]R[/bold red][/x]\r\n"
EVIL_NAME = EVIL.replace(b"/", b"|")
EVIL_TARGET = b"t\x1b[31m\x07\x08\x7f[red]T[/red][/x]"
EVIL_XATTR = (b"user.\x1b[1m\xc2\x85", b"v\x1b[5m\x9b")


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evil")
    layer = hostile.write(
        tmp / "evil.tar",
        member(EVIL_NAME, data=b"data"),
        member(b"link", b"2", linkname=EVIL_TARGET),
        member(b"xa", data=b"x", pax={b"SCHILY.xattr." + EVIL_XATTR[0]: EVIL_XATTR[1]}),
        member(b"old\x1b[7m", data=b"o", pax={b"mtime": b"-5"}),
        member(b"dropped", data=b"d", pax={b"SCHILY.xattr.bogus.\x1b[1m": b"v"}))
    image = tmp / "evil.nydus"
    done = run("create", layer, "-o", image)
    assert done.returncode == 0, done.stderr
    return tmp, layer, image, done


def test_create_warnings_are_escaped(evil):
    _tmp, _layer, _image, done = evil
    no_control_bytes(done.stderr)
    text = done.stderr.decode()
    assert "old\\x1b[7m" in text and "before 1970" in text
    assert "dropped xattr" in text and "\\x1b[1m" in text


@pytest.mark.parametrize("args", [[], ["--path", "/xa"], ["--path", "/link"],
                                  ["--path", "/" + os.fsdecode(EVIL_NAME)]])
def test_dump_tables_escape_everything_from_the_image(evil, args):
    _tmp, _layer, image, _done = evil
    done = run("dump", image, *args, env={**os.environ, "COLUMNS": "3000"})   # no folding
    assert done.returncode == 0, done.stderr
    no_control_bytes(done.stdout)
    out = done.stdout.decode()
    if not args:
        assert "e\\x1b]0;owned\\x07\\x1b[2J\\u009b31m\\x9b\\xff\\u202e" in out
        assert "[bold red]R[|bold red][|x]" in out           # markup shown, not applied
        assert "t\\x1b[31m\\x07\\x08\\x7f[red]T[/red][/x]" in out
    elif args[1] == "/xa":
        assert "user.\\x1b[1m\\u0085" in out


def test_dump_json_keeps_exact_values(evil):
    _tmp, _layer, image, _done = evil
    done = run("dump", image, "--json")
    assert done.returncode == 0
    done.stdout.decode("ascii")                                # every non-ASCII escaped by JSON
    doc = json.loads(done.stdout)
    paths = {os.fsencode(i["path"]) for i in doc["inodes"]}
    assert b"/" + EVIL_NAME in paths
    link = next(i for i in doc["inodes"] if i["path"] == "/link")
    assert os.fsencode(link["symlink"]) == EVIL_TARGET
    xa = next(i for i in doc["inodes"] if i["path"] == "/xa")
    assert xa["xattrs"] == {os.fsdecode(EVIL_XATTR[0]): EVIL_XATTR[1].hex()}


def test_check_report_escapes_and_json_is_exact(evil, tmp_path):
    _tmp, _layer, image, _done = evil
    other = hostile.write(tmp_path / "other.tar",
                          member(EVIL_NAME, data=b"changed"),
                          member(b"link", b"2", linkname=EVIL_TARGET + b"\x1b"),
                          member(b"xa", data=b"x", pax={b"SCHILY.xattr." + EVIL_XATTR[0]: b"\x1bw"}))
    done = run("check", image, "--layers", other, "--examples", "50",
               env={**os.environ, "COLUMNS": "3000"})
    assert done.returncode == 1, done.stderr
    no_control_bytes(done.stdout)
    no_control_bytes(done.stderr)
    assert "\\u202e" in done.stdout.decode()
    done = run("check", image, "--layers", other, "--json", "-")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    found = {(os.fsencode(d["path"]), d["field"]) for d in doc["differences"]}
    assert (b"/" + EVIL_NAME, "digest") in found or (b"/" + EVIL_NAME, "size") in found
    symlink = next(d for d in doc["differences"] if d["field"] == "symlink")
    assert os.fsencode(symlink["expected"]) == EVIL_TARGET + b"\x1b"


def test_error_messages_are_escaped(evil, tmp_path):
    _tmp, _layer, image, _done = evil
    nul = hostile.write(tmp_path / "nul.tar",
                        member(b"x", data=b"x", pax={b"path": b"a\x1b[2J\x9b\0b"}))
    line = one_line_error(run("create", nul, "-o", tmp_path / "o"), "PAX path", "NUL")
    assert "\\x1b[2J" in line
    done = run("dump", image, "--path", "/nope\x1b[2J\u009b")
    line = one_line_error(done, "nope\\x1b[2J\\u009b", "no such file")
    assert "standard output" not in line
    done = run("check", image, "--layers", tmp_path / "missing\x1b[31m.tar")
    one_line_error(done, "missing\\x1b[31m")
    for d in (done,):
        no_control_bytes(d.stderr)


@needs_root
def test_mount_log_is_escaped(tmp_path, mounts):
    """A directory entry whose inode cannot be decoded is logged with its name, escaped."""
    layer = hostile.write(tmp_path / "l.tar", member(b"d/", b"5"),
                          member(b"d/ok", data=b"fine"), member(b"d/" + EVIL_NAME, data=b""))
    boot = tmp_path / "l\x1b[31m\u009b.boot"      # the reader names the file in its errors
    assert run("create", layer, "--bootstrap", boot, "--blob-dir", tmp_path).returncode == 0
    with open_image(boot) as image:
        nid = image.resolve(b"/d/" + EVIL_NAME)
    raw = bytearray(boot.read_bytes())
    hits = [i for i in range(0, len(raw) - 12, 4)
            if raw[i:i + 8] == struct.pack("<Q", nid) and raw[i + 10] == 1 and raw[i + 11] == 0]
    assert len(hits) == 1
    struct.pack_into("<Q", raw, hits[0], 1 << 40)
    boot.write_bytes(bytes(raw))
    mounts.expect_log(r"left out")
    m = mounts.mount(boot, "--blob-dir", tmp_path)
    assert os.listdir(m.path / "d") == ["ok"]
    log = m.log_file.read_bytes()
    assert b"left out" in log and b"l\\x1b[31m\\u009b.boot" in log, log
    no_control_bytes(log)


# --- the escaping function itself ---------------------------------------------------------------

UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_printable_leaves_nothing_a_terminal_acts_on(raw):
    shown = printable(raw)
    shown.encode("utf-8")                                    # valid UTF-8, no lone surrogates
    assert not [c for c in shown if unicodedata.category(c) in UNSAFE_CATEGORIES]
    assert printable(shown) == shown                         # idempotent
    # every safe character of valid input survives as it is
    text = raw.decode("utf-8", "surrogateescape")
    kept = "".join(c for c in text if unicodedata.category(c) not in UNSAFE_CATEGORIES)
    for c in kept:
        assert c in shown
