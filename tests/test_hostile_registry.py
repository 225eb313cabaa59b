"""docker:// references against a registry that answers like an adversary: a real registry
(tests/registry_fixtures.py) behind the fault proxy (tests/registry_fault_proxy.py), whose
`answer` rule replaces chosen answers with made-up ones: manifests of 100 MB or without end,
wrong Content-Type, Docker-Content-Digest or digest, redirect loops and redirects to other
schemes, a token server answering garbage, WWW-Authenticate headers huge or malformed, bodies
trickled a byte at a time.

Every verb that takes a reference runs in a forked child of tests/hostile_driver.py under
RLIMIT_AS = MEMORY_CEILING and must exit 2 with one line naming what is wrong; the slow answers
go through the registry source itself with short timeouts, and must fail within bounds.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from bounded import TIME_LIMIT
from registry_fault_proxy import FaultProxy
from registry_helpers import skopeo_push
from test_hostile_images import check_runs, drive, write_source

pytest_plugins = ["registry_fixtures"]

ESC = "\x1b]0;owned\x07\x1b[31m\x9b2J"    # what an HTTP header can carry (latin-1)
MANIFEST = r"/v2/hostile/(nydus|src)/manifests/.*"
BLOB = r"/v2/hostile/(nydus|src)/blobs/sha256:[0-9a-f]{64}"


@pytest.fixture(scope="module")
def pushed(anon_registry):
    top = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-hostile-registry-"))
    write_source(top / "src")
    skopeo_push(top / "src", anon_registry, "hostile/src", "v1")
    env = dict(os.environ, NYDUSFS_CACHE_DIR=str(top / "cache"))
    r = subprocess.run([sys.executable, "-m", "nydusfs", "convert", f"oci:{top / 'src'}:v1",
                        f"docker://{anon_registry.host}/hostile/nydus:n", "--no-progress"],
                       capture_output=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    proxy = FaultProxy(anon_registry.url)
    try:
        yield top, proxy
    finally:
        proxy.close()
        subprocess.run(["rm", "-rf", str(top)], check=False)


def verbs(host: str, work: pathlib.Path, every: bool) -> list[list[str]]:
    """Every verb that takes a reference, or (`every` False) one that reads a Nydus image and
    one that reads a source: they fail in the registry source they all share."""
    nydus, src = f"docker://{host}/hostile/nydus:n", f"docker://{host}/hostile/src:v1"
    convert = ["convert", src, f"oci:{work / 'converted'}:x", "--no-progress", "--no-cache"]
    if not every:
        return [["dump", nydus], convert]
    return [["dump", nydus], ["check", nydus], ["explore", "--report", nydus],
            ["unpack", nydus, "-o", str(work / "unpacked")], ["diff", nydus, nydus],
            ["mount", nydus, str(work / "mnt")], convert, ["check", src, nydus]]


EVERY_VERB = {"manifest-100mb", "blob-wrong-bytes", "token-endless"}


def _endless_json() -> bytes:
    return b'{"schemaVersion": 2, "x": "' + b"a" * (1 << 16)


def setup_token_garbage(proxy: FaultProxy, body: bytes, endless: bool = False) -> None:
    realm = f"http://{proxy.host}/token"
    proxy.answer(1000, r"/v2/", status=401,
                 headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
    proxy.answer(1000, r"/token", body=body, endless=endless, headers={"Content-Type": "application/json"})


# name -> (set the faults, words of every refusal)
CASES = {
    "manifest-100mb": (lambda p: p.answer(1000, MANIFEST, body=b"{", length=100 << 20, endless=True),
                       ("manifest", "more than")),
    "manifest-endless": (lambda p: p.answer(1000, MANIFEST, body=_endless_json(), endless=True),
                         ("manifest", "more than")),
    "manifest-content-type": (lambda p: p.answer(1000, MANIFEST, body=b'{"schemaVersion": 2}',
                                                 headers={"Content-Type": "text/html" + ESC}), ("media type",)),
    "manifest-not-json": (lambda p: p.answer(1000, MANIFEST, body=b"<html>" + ESC.encode(),
                                             headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
                          ("not valid JSON",)),
    "manifest-deep": (lambda p: p.answer(1000, MANIFEST, body=b"[" * 100_000 + b"]" * 100_000,
                                         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
                      ("nested too deep",)),
    "manifest-digest-header": (lambda p: p.forward_body(1000, MANIFEST, lambda d: d.replace(b'"size"', b'"size" ')),
                               ("Docker-Content-Digest",)),
    "blob-redirect-loop": (lambda p: p.answer(1000, BLOB, status=307, headers={"Location": "/v2/hostile/x/loop"})
                           or p.answer(1000, r"/v2/hostile/x/loop", status=302,
                                       headers={"Location": "/v2/hostile/x/loop"}), ("redirects",)),
    "blob-redirect-file": (lambda p: p.answer(1000, BLOB, status=307, headers={"Location": "file:///etc/passwd"}),
                           ("not an http or https URL",)),
    "blob-wrong-bytes": (lambda p: p.answer(1000, BLOB, body=b'{"rootfs": {}}'), ("digest",)),
    "blob-404-endless": (lambda p: p.answer(1000, BLOB, status=404, body=b"x" * 65536, endless=True),
                         ("not found",)),
    "token-not-json": (lambda p: setup_token_garbage(p, b"<html>" + ESC.encode()), ("token",)),
    "token-deep": (lambda p: setup_token_garbage(p, b"[" * 100_000), ("token",)),
    "token-endless": (lambda p: setup_token_garbage(p, b'{"token": "' + b"t" * 65536, endless=True),
                      ("token", "more than")),
    "token-wrong-type": (lambda p: setup_token_garbage(p, b'{"token": 5, "expires_in": "soon"}'), ("token",)),
    "challenge-no-realm": (lambda p: p.answer(1000, r"/v2/", status=401,
                                              headers={"WWW-Authenticate": "Bearer service=" + "x" * 3000}),
                           ("realm",)),
    "challenge-realm-scheme": (lambda p: p.answer(1000, r"/v2/", status=401,
                                                  headers={"WWW-Authenticate": 'Bearer realm="file:///etc/passwd"'}),
                               ("realm",)),
    "challenge-huge": (lambda p: p.answer(1000, r"/v2/", status=401,
                                          headers={"WWW-Authenticate": 'Bearer realm="' + "r" * 200_000 + '"'}),
                       ("registry",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_registry_answers(pushed, case):
    top, proxy = pushed
    setup, words = CASES[case]
    work = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=top))
    (work / "mnt").mkdir()
    proxy.clear()
    setup(proxy)
    try:
        cases = verbs(proxy.host, work, case in EVERY_VERB)
        results = drive(cases, {"NYDUSFS_CACHE_DIR": str(work / "cache")})
        if os.path.ismount(work / "mnt"):
            subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True, check=False)
        check_runs(cases, results, work)
        for argv, (code, err) in zip(cases, results, strict=True):
            assert code == 2, (argv, code, err[-2000:])
            for w in words:
                assert w in err, (argv, w, err)
        assert sorted(os.listdir(work)) == ["cache", "mnt"] or sorted(os.listdir(work)) == ["mnt"]
    finally:
        proxy.clear()
        with proxy.lock:
            proxy.rules.clear()
        subprocess.run(["rm", "-rf", str(work)], check=False)


# --- slow and short answers: bounded by the timeouts, through the source itself ----------------

TRICKLE = b'{"schemaVersion": 2' + b" " * 2000 + b"}"     # 100 s at 20 bytes/s
SLOW = {
    "manifest-trickled": lambda p: p.answer(1000, MANIFEST, body=TRICKLE, trickle=0.05),
    "manifest-short": lambda p: p.answer(1000, MANIFEST, body=b'{"schemaVersion": 2}', length=4000),
    "token-trickled": lambda p: (setup_token_garbage(p, b""), p.rules.pop(), p.answer(
        1000, r"/token", body=b'{"token": "' + b"t" * 2000 + b'"}', trickle=0.05)),
    "config-trickled": lambda p: p.answer(1000, BLOB, body=TRICKLE, trickle=0.05),
}
# a layer that comes fast, then a byte each 20 ms: 80 s for the rest
FAST_THEN_SLOW = {"body": bytes(256 << 10) + bytes(4000), "trickle": 0.02, "fast": 256 << 10}
LAYER = """
import json, sys
from nydusfs.errors import NydusfsError
from nydusfs.image import open_source
try:
    with open_source(sys.argv[1], timeout=1.0, retry_time=1.0, connect_retry_time=1.0,
                     **({"cache_dir": sys.argv[3]} if sys.argv[2] == "range" else {})) as source:
        layer = json.loads(source.index_or_manifest()[0])["layers"][0]
        if sys.argv[2] == "range":      # 1 MiB asked for: more than the answer's fast part
            source.range_reader(layer["digest"], 1 << 20).pread(1 << 20, 0)
        else:
            with source.open_blob(layer["digest"]) as f:
                while f.read(1 << 20):
                    pass
except NydusfsError as e:
    print(e)
    sys.exit(2)
"""
RESOLVE = """
import sys
from nydusfs.errors import NydusfsError
from nydusfs.image import open_source, resolve
try:
    with open_source(sys.argv[1], timeout=1.0, retry_time=1.0, connect_retry_time=1.0) as source:
        resolve(source)
except NydusfsError as e:
    print(e)
    sys.exit(2)
"""


@pytest.mark.parametrize("how", ["stream", "range"])
@pytest.mark.parametrize("trickle", ["from-the-start", "after-256-KiB"])
def test_slow_layer_bodies_fail_within_bounds(pushed, tmp_path, how, trickle):
    """A layer body (streamed whole, as convert and check read layers, or a range, as the
    mount reads them) that trickles is given up on within the timeouts: one window of the
    timeout must bring 64 KiB/s, however fast the body began."""
    _, proxy = pushed
    proxy.clear()
    slow = dict(FAST_THEN_SLOW, fast=0) if trickle == "from-the-start" else FAST_THEN_SLOW
    proxy.answer(1000, BLOB, methods=("GET",), **slow)
    try:
        r = subprocess.run([sys.executable, "-c", LAYER, f"docker://{proxy.host}/hostile/src:v1",
                            how, str(tmp_path / "cache")],
                           capture_output=True, text=True, timeout=TIME_LIMIT, check=False)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
        assert len(r.stdout.strip().splitlines()) == 1, r.stdout
        assert "blob sha256:" in r.stdout, r.stdout
    finally:
        with proxy.lock:
            proxy.rules.clear()


@pytest.mark.parametrize("case", sorted(SLOW))
def test_slow_answers_fail_within_bounds(pushed, case):
    """A body trickled slower than the registry source allows is given up on (with 1 s
    timeouts: within seconds), not waited for; the child is killed as hung after TIME_LIMIT."""
    _, proxy = pushed
    proxy.clear()
    SLOW[case](proxy)
    try:
        r = subprocess.run([sys.executable, "-c", RESOLVE, f"docker://{proxy.host}/hostile/src:v1"],
                           capture_output=True, text=True, timeout=TIME_LIMIT, check=False)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-2000:])
        assert len(r.stdout.strip().splitlines()) == 1, r.stdout
    finally:
        with proxy.lock:
            proxy.rules.clear()
