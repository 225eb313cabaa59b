"""Hypothesis-driven: a member with random extreme values in its numeric header fields and PAX
records (base-256 numbers up to 2^90, negative times, thousands of digits, NUL bytes, inf/nan
times). create either refuses it with one line (exit 2, no traceback, no output), or converts
it, and then check's independent reference agrees with the image (or refuses the same layer
with one line)."""

from __future__ import annotations

import os
import pathlib
import tempfile

import hostile
from hostile import member, run
from hypothesis import given, settings
from hypothesis import strategies as st

numbers = st.one_of(st.integers(0, 8), st.integers(0, 1 << 90),
                    st.sampled_from([(1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64, 4095, 4096,
                                     (1 << 20) - 1, 1 << 20]))
pax_times = st.one_of(st.sampled_from([b"inf", b"-inf", b"nan", b"1e999999999", b"-0.5", b"",
                                       b"9" * 5000, b"-" + b"9" * 30, b"18446744073709551616"]),
                      st.integers(-(1 << 70), 1 << 70).map(lambda n: str(n).encode()),
                      st.tuples(st.integers(-(1 << 40), 1 << 40), st.integers(0, 10**12))
                      .map(lambda t: f"{t[0]}.{t[1]}".encode()))
pax_numbers = st.one_of(numbers.map(lambda n: str(n).encode()),
                        st.sampled_from([b"-1", b"9" * 5000, b"0x10", b" 5", b""]))
names = st.binary(min_size=1, max_size=12).filter(lambda b: b not in (b".", b"..") and
                                                  not b.startswith(b"/"))


@st.composite
def members(draw):
    kind = draw(st.sampled_from([b"0", b"2", b"3", b"4", b"5", b"6"]))
    fields = {}
    for field in ("uid", "gid", "mtime", "devmajor", "devminor"):
        if draw(st.booleans()):
            # base-256 fields hold 63 bits in 8 bytes (uid, gid, dev), 95 in 12 (mtime)
            fields[field] = draw(numbers) % (1 << (95 if field == "mtime" else 63))
    pax = {}
    for key, strategy in ((b"mtime", pax_times), (b"uid", pax_numbers), (b"gid", pax_numbers),
                          (b"path", names), (b"linkpath", names)):
        if draw(st.integers(0, 3)) == 0:
            pax[key] = draw(strategy)
    if kind == b"2" and b"linkpath" not in pax:
        fields["linkname"] = b"target"
    return member(b"m", kind, data=b"x" if kind == b"0" else b"", pax=pax or None, **fields)


@settings(max_examples=30, deadline=None)
@given(m=members(), version=st.sampled_from([5, 6]))
def test_random_extreme_fields(m, version):
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        layer = hostile.write(d / "l.tar", member(b"ok", data=b"ok"), m)
        out = d / "l.nydus"
        done = run("create", layer, "-o", out, "--fs-version", version, "-q", timeout=60)
        assert b"Traceback" not in done.stderr, done.stderr
        if done.returncode != 0:
            hostile.one_line_error(done, str(layer))
            assert sorted(os.listdir(d)) == ["l.tar"]
            return
        checked = run("check", out, "--layers", layer, "--json", "-", timeout=60)
        assert b"Traceback" not in checked.stderr, checked.stderr
        if checked.returncode == 2:
            hostile.one_line_error(checked, str(layer))
        else:
            assert checked.returncode == 0, checked.stdout
