"""Hostile image references through every verb that takes one: OCI layouts, oci-archive and
docker-archive tars crafted field by field (and mutated by hypothesis), and registries that
answer like an adversary (tests/test_hostile_registry.py).

The images are built here with json, hashlib, gzip and tarfile (no nydusfs code), the Nydus one
once with `nydusfs convert`. Every verb runs in a forked child of tests/hostile_driver.py under
RLIMIT_AS = MEMORY_CEILING and within TIME_LIMIT, and must exit 0/1, or 2 with one line on
stderr naming what is wrong; never a traceback, an "internal error", a write outside the paths
given, or an output left behind by a failed run. Anything from the image that reaches the
terminal is escaped (no ESC byte in any output).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from bounded import MEMORY_CEILING, TIME_LIMIT
from corpus import Layer, pattern
from hypothesis import given, settings
from hypothesis import strategies as st

DRIVER = pathlib.Path(__file__).with_name("hostile_driver.py")
DERANDOMIZE = os.environ.get("NYDUSFS_FUZZ_RANDOM") != "1"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
ESC = "\x1b]0;owned\x07\x1b[31mRED\u202e\x9b2J"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- a small layout, written and read with plain json/hashlib ------------------------------

class Layout:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def blob_path(self, digest: str) -> pathlib.Path:
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def put(self, data: bytes) -> str:
        self.blob_path(sha(data)).write_bytes(data)
        return sha(data)

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_bytes())

    def write_index(self, doc: Any) -> None:
        (self.path / "index.json").write_text(json.dumps(doc))

    def manifest(self) -> dict:
        return json.loads(self.blob_path(self.index()["manifests"][0]["digest"]).read_bytes())

    def config(self) -> dict:
        return json.loads(self.blob_path(self.manifest()["config"]["digest"]).read_bytes())

    def set_manifest(self, doc: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(doc).encode()
        index = self.index()
        index["manifests"][0].update(digest=self.put(data), size=len(data))
        self.write_index(index)

    def set_config(self, doc: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(doc).encode()
        m = self.manifest()
        m["config"].update(digest=self.put(data), size=len(data))
        self.set_manifest(m)


def write_source(path: pathlib.Path) -> None:
    """An OCI layout of two gzip layers, tagged v1."""
    (path / "blobs" / "sha256").mkdir(parents=True)
    lay = Layout(path)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    tars = [Layer().dir("etc").file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n").file("big", pattern(200_000))
            .symlink("link", "etc/passwd").tar(),
            Layer().file("etc/motd", b"hello\n").file("more", pattern(50_000, 2)).tar()]
    layers = [{"mediaType": OCI_LAYER_GZIP, "digest": lay.put(gz := gzip.compress(t, mtime=0)), "size": len(gz)}
              for t in tars]
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
              "history": [{"created_by": "test"}]}
    cdata = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": lay.put(cdata), "size": len(cdata)},
                "layers": layers}
    mdata = json.dumps(manifest).encode()
    lay.write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": lay.put(mdata), "size": len(mdata),
         "annotations": {REF_NAME: "v1"}}]})


def tar_of(members: list[tuple[str, bytes | None, str]]) -> bytes:
    """A plain tar: (name, data, kind) with kind "f" (file), "d" (directory), "l:TARGET" (a
    symlink) or "h:TARGET" (a hard link)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind.startswith("l:"):
                ti.type, ti.linkname = tarfile.SYMTYPE, kind[2:]
            elif kind.startswith("h:"):
                ti.type, ti.linkname = tarfile.LNKTYPE, kind[2:]
            else:
                ti.size = len(data or b"")
            tf.addfile(ti, io.BytesIO(data) if kind == "f" else None)
    return buf.getvalue()


def layout_members(path: pathlib.Path) -> list[tuple[str, bytes | None, str]]:
    out: list[tuple[str, bytes | None, str]] = [("oci-layout", (path / "oci-layout").read_bytes(), "f"),
                                                ("index.json", (path / "index.json").read_bytes(), "f")]
    for p in sorted((path / "blobs" / "sha256").iterdir()):
        out.append((f"blobs/sha256/{p.name}", p.read_bytes(), "f"))
    return out


def docker_members(src: pathlib.Path) -> list[tuple[str, bytes | None, str]]:
    """`docker save` style: manifest.json, the config and uncompressed layer tars."""
    lay = Layout(src)
    m = lay.manifest()
    config = lay.blob_path(m["config"]["digest"]).read_bytes()
    layers = [gzip.decompress(lay.blob_path(d["digest"]).read_bytes()) for d in m["layers"]]
    names = [f"{sha(t)[7:]}/layer.tar" for t in layers]
    manifest = [{"Config": f"{sha(config)[7:]}.json", "RepoTags": ["img:v1"], "Layers": names}]
    return [("manifest.json", json.dumps(manifest).encode(), "f"),
            (f"{sha(config)[7:]}.json", config, "f")] + [(n, t, "f") for n, t in zip(names, layers, strict=True)]


@pytest.fixture(scope="module")
def images():
    top = pathlib.Path(tempfile.mkdtemp(prefix="nydusfs-hostile-images-"))
    try:
        write_source(top / "src")
        env = dict(os.environ, NYDUSFS_CACHE_DIR=str(top / "cache"))
        r = subprocess.run([sys.executable, "-m", "nydusfs", "convert", f"oci:{top / 'src'}:v1",
                            f"oci:{top / 'nydus'}:n", "--no-progress"], capture_output=True, env=env, check=False)
        assert r.returncode == 0, r.stderr
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- running verbs ---------------------------------------------------------------------------

def snapshot(top: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every path under `top` with its size and mtime (what a stray write would change)."""
    out = {}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(d, name)
            info = os.lstat(p)
            out[os.path.relpath(p, top)] = (info.st_size, info.st_mtime_ns)
    return out


def drive(cases: list[list[str]], env: dict[str, str]) -> list[tuple[int, str]]:
    proc = subprocess.run([sys.executable, str(DRIVER), str(MEMORY_CEILING), json.dumps(cases)],
                          capture_output=True, timeout=TIME_LIMIT * 4, check=False,
                          env=dict(os.environ, MALLOC_ARENA_MAX="2", **env))
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout)]


def nydus_verbs(ref: str, out: pathlib.Path, mount: bool = True) -> list[list[str]]:
    """The verbs that read a Nydus image; `mount` only for images that must be refused (it
    fails before mounting)."""
    return [["dump", ref], ["check", ref], ["explore", "--report", ref],
            ["unpack", ref, "-o", str(out / "unpacked")], ["diff", ref, ref]] + \
        ([["mount", ref, str(out / "mnt")]] if mount else [])


def source_verbs(ref: str, nydus: pathlib.Path, out: pathlib.Path) -> list[list[str]]:
    return [["convert", ref, f"oci:{out / 'converted'}:x", "--no-progress", "--no-cache"],
            ["convert", ref, f"oci-archive:{out / 'converted.tar'}:x", "--no-progress", "--no-cache"],
            ["check", ref, f"oci:{nydus}:n"], ["explore", "--report", ref]]


def check_runs(cases: list[list[str]], results: list[tuple[int, str]], work: pathlib.Path) -> None:
    """What every run must hold, refused or not."""
    for argv, (code, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err and "internal error" not in err, (argv, err[-3000:])
        assert code in (0, 1, 2), (argv, code, err[-3000:])
        assert "\x1b" not in err and "\x9b" not in err, (argv, err[-500:])
        if code == 2:
            assert len(lines) == 1, (argv, lines[:10])
            assert "out of memory" not in err and "out of stack" not in err, (argv, err)
        if code != 0 and argv[0] == "convert":
            assert not (work / "converted").exists() and not (work / "converted.tar").exists(), argv
        if code == 2 and argv[0] == "unpack":
            assert not (work / "unpacked").exists(), argv
    staging = [n for n in os.listdir(work) if n.startswith(".converted")]
    assert not staging, staging


class Batch:
    """The cases of one family, built in their own directories under the images' directory
    and run in one driver process; stray writes are looked for across the whole tree."""

    def __init__(self, images: pathlib.Path) -> None:
        self.images = images
        self.plan: dict[str, tuple[pathlib.Path, list[list[str]]]] = {}
        self.results: dict[str, list[tuple[int, str]]] = {}
        self.stray: list[str] = []

    def add(self, case: str, build: Callable[[pathlib.Path], list[list[str]]]) -> None:
        work = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=self.images))
        (work / "mnt").mkdir()
        self.plan[case] = (work, build(work))

    def run(self) -> None:
        before = snapshot(self.images)
        flat = [(case, argv) for case, (_, argvs) in self.plan.items() for argv in argvs]
        results = drive([argv for _, argv in flat], {"NYDUSFS_CACHE_DIR": str(self.images / "run-cache")})
        for (case, _), result in zip(flat, results, strict=True):
            self.results.setdefault(case, []).append(result)
        for work, _ in self.plan.values():   # a mount that should have been refused
            if os.path.ismount(work / "mnt"):
                subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True, check=False)
        after = snapshot(self.images)
        ours = tuple(str(w.relative_to(self.images)) for w, _ in self.plan.values()) + ("run-cache",)
        self.stray = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                            and k.split(os.sep)[0] not in ours)

    def outcome(self, case: str) -> tuple[list[list[str]], list[tuple[int, str]]]:
        assert not self.stray, self.stray[:10]
        work, cases = self.plan[case]
        check_runs(cases, self.results[case], work)
        return cases, self.results[case]


def assert_refused(results: list[tuple[int, str]], cases: list[list[str]], *words: str,
                   finding: bool = False) -> None:
    for argv, (code, err) in zip(cases, results, strict=True):
        if argv[0] == "mount" and code == 0:
            continue
        if argv[0] == "check" and code == 1 and finding:
            continue    # check reports it as a finding of its manifest rule
        assert code == 2, (argv, code, err[-2000:])
        for w in words:
            assert w in err, (argv, w, err)


# --- crafted OCI layouts ---------------------------------------------------------------------

Edit = Callable[[Layout, pathlib.Path], str | None]


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _index_raw(raw: bytes) -> Edit:
    def edit(lay: Layout, _: pathlib.Path) -> None:
        (lay.path / "index.json").write_bytes(raw)
    return edit


def _manifest_edit(f: Callable[[dict], Any]) -> Edit:
    def edit(lay: Layout, _: pathlib.Path) -> None:
        m = lay.manifest()
        f(m)
        lay.set_manifest(m)
    return edit


def _config_edit(f: Callable[[dict], Any]) -> Edit:
    def edit(lay: Layout, _: pathlib.Path) -> None:
        c = lay.config()
        f(c)
        lay.set_config(c)
    return edit


def _index_entry(f: Callable[[dict], Any]) -> Edit:
    def edit(lay: Layout, _: pathlib.Path) -> None:
        index = lay.index()
        f(index["manifests"][0])
        lay.write_index(index)
    return edit


def _replace_blob(which: str, how: str) -> Edit:
    """The manifest's, config's or first layer's blob replaced by a symlink out of the layout
    (to a file with the same bytes), a FIFO, a directory or nothing."""
    def edit(lay: Layout, top: pathlib.Path) -> None:
        m = lay.manifest()
        digest = {"manifest": lay.index()["manifests"][0]["digest"], "config": m["config"]["digest"],
                  "layer": m["layers"][0]["digest"]}[which]
        p = lay.blob_path(digest)
        data = p.read_bytes()
        p.unlink()
        if how == "symlink-out":
            outside = top / f"outside-{which}"
            outside.write_bytes(data)
            p.symlink_to(outside)
        elif how == "symlink-in":
            (lay.path / "blobs" / "kept").write_bytes(data)
            p.symlink_to("../kept")
        elif how == "fifo":
            os.mkfifo(p)
        elif how == "dir":
            p.mkdir()
    return edit


def _tamper_layer(lay: Layout, _: pathlib.Path) -> None:
    p = lay.blob_path(lay.manifest()["layers"][0]["digest"])
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x55
    p.write_bytes(bytes(data))


def _nested_index(lay: Layout, _: pathlib.Path) -> None:
    index = lay.index()
    inner = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [dict(index["manifests"][0], annotations={})]}
    data = json.dumps(inner).encode()
    index["manifests"][0].update(mediaType=OCI_INDEX, digest=lay.put(data), size=len(data))
    lay.write_index(index)


def _index_loop(lay: Layout, _: pathlib.Path) -> None:
    """An index naming, as a manifest, an index that names itself through index.json's digest."""
    index = lay.index()
    index["manifests"][0].update(mediaType=OCI_MANIFEST)
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index["manifests"]}).encode()
    index["manifests"][0].update(digest=lay.put(data), size=len(data))
    lay.write_index(index)


# name -> (edit, words every refusal names; None: the image is valid and must be accepted)
NYDUS_CASES: dict[str, tuple[Edit, tuple[str, ...] | None]] = {
    "index-not-json": (_index_raw(b"{nope"), ("index.json", "not valid JSON")),
    "index-deep": (_index_raw(b'{"manifests":' + _deep(100_000) + b"}"), ("index.json", "nested too deep")),
    "index-huge": (_index_raw(b'{"manifests":[' + b" " * (5 << 20) + b"]}"), ("index.json", "more than")),
    "index-list": (_index_raw(b"[]"), ("index.json", "expected a JSON object")),
    "index-manifests-type": (_index_raw(b'{"manifests": {"a": 1}}'), ("index.json", "manifests")),
    "index-entry-type": (_index_raw(b'{"manifests": [5]}'), ("index.json", "descriptor")),
    "index-escapes": (_index_entry(lambda e: e.update(annotations={REF_NAME: ESC})), ("no image named",)),
    "digest-path-trick": (_index_entry(lambda e: e.update(digest="sha256:../../../etc/passwd")), ("digest",)),
    "digest-unknown-algorithm": (_index_entry(lambda e: e.update(digest="sha512:" + "0" * 128)), ("digest",)),
    "digest-uppercase": (_index_entry(lambda e: e.update(digest=e["digest"].upper())), ("digest",)),
    "size-lies": (_index_entry(lambda e: e.update(size=e["size"] + 1)), ("size",)),
    "size-negative": (_index_entry(lambda e: e.update(size=-1)), ("size",)),
    "size-string": (_index_entry(lambda e: e.update(size="12")), ("size",)),
    "size-huge": (_index_entry(lambda e: e.update(size=1 << 70)), ("size",)),
    "manifest-missing": (_replace_blob("manifest", "missing"), ("is missing",)),
    "manifest-symlink-out": (_replace_blob("manifest", "symlink-out"), ("leading out of the layout",)),
    "manifest-symlink-in": (_replace_blob("manifest", "symlink-in"), None),
    "manifest-fifo": (_replace_blob("manifest", "fifo"), ("FIFO",)),
    "manifest-dir": (_replace_blob("manifest", "dir"), ("a directory",)),
    "config-symlink-out": (_replace_blob("config", "symlink-out"), ("leading out of the layout",)),
    "layer-symlink-out": (_replace_blob("layer", "symlink-out"), ("leading out of the layout",)),
    "layer-fifo": (_replace_blob("layer", "fifo"), ("FIFO",)),
    "manifest-deep": (lambda lay, _: lay.set_manifest(None, b'{"a":' + _deep(100_000) + b"}"), ("nested too deep",)),
    "manifest-is-index": (_manifest_edit(lambda m: m.update(mediaType=OCI_INDEX)), ("mediaType",)),
    "manifest-media-unknown": (_index_entry(lambda e: e.update(mediaType="text/html" + ESC)), ("media type",)),
    "manifest-schema": (_manifest_edit(lambda m: m.update(schemaVersion=ESC)), ("schemaVersion",)),
    "manifest-layers-type": (_manifest_edit(lambda m: m.update(layers={"x": 1})), ("layers",)),
    "manifest-layer-type": (_manifest_edit(lambda m: m["layers"].append("x")), ("layer",)),
    "layer-size-lies": (_manifest_edit(lambda m: m["layers"][0].update(size=m["layers"][0]["size"] - 1)), ("size",)),
    "config-size-lies": (_manifest_edit(lambda m: m["config"].update(size=m["config"]["size"] + 7)), ("size",)),
    "config-media-unknown": (_manifest_edit(lambda m: m["config"].update(mediaType=ESC)), ("config",)),
    "config-deep": (lambda lay, _: lay.set_config(None, b'{"rootfs":' + _deep(100_000) + b"}"), ("nested too deep",)),
    "config-diff-ids-type": (_config_edit(lambda c: c["rootfs"].update(diff_ids="x")), ("diff_ids",)),
    "config-diff-ids-path": (_config_edit(lambda c: c["rootfs"]["diff_ids"].__setitem__(0, "sha256:../x")),
                             ("diff_ids",)),
    "config-escapes": (_config_edit(lambda c: c.update(history=[{"created_by": ESC, "comment": ESC}],
                                                         config={"Env": [ESC], "Labels": {ESC: ESC}})), None),
    "annotation-escapes": (_manifest_edit(lambda m: m["layers"][-1]["annotations"].update(
        {"containerd.io/snapshot/nydus-fs-version": ESC, ESC: ESC})), None),
    "layer-tampered": (_tamper_layer, None),   # read lazily: each chunk is checked (exit 1 or 2)
    "nested-index": (_nested_index, None),
    "index-loop": (_index_loop, ("mediaType",)),
    "oci-layout-missing": (lambda lay, _: (lay.path / "oci-layout").unlink(), ("oci-layout",)),
    "oci-layout-symlink-out": (lambda lay, top: ((lay.path / "oci-layout").rename(top / "outside-layout"),
                                                 (lay.path / "oci-layout").symlink_to(top / "outside-layout")),
                               ("leading out of the layout",)),
    "index-fifo": (lambda lay, _: ((lay.path / "index.json").unlink(), os.mkfifo(lay.path / "index.json")),
                   ("index.json", "FIFO")),
}


def copy_with(images: pathlib.Path, base: str, edit: Edit, work: pathlib.Path) -> pathlib.Path:
    work.mkdir(exist_ok=True)
    shutil.copytree(images / base, work / "image", symlinks=True)
    edit(Layout(work / "image"), work)
    return work / "image"


@pytest.fixture(scope="module")
def nydus_batch(images):
    batch = Batch(images)
    for case, (edit, words) in NYDUS_CASES.items():
        def build(work: pathlib.Path, edit: Edit = edit, words: Any = words) -> list[list[str]]:
            image = copy_with(images, "nydus", edit, work)
            return nydus_verbs(f"oci:{image}:n", work, mount=words is not None)
        batch.add(case, build)
    batch.run()
    return batch


@pytest.mark.parametrize("case", sorted(NYDUS_CASES))
def test_crafted_nydus_layouts(nydus_batch, case):
    words = NYDUS_CASES[case][1]
    cases, results = nydus_batch.outcome(case)
    if words is not None:
        assert_refused(results, cases, *words)
    elif case != "layer-tampered":     # read lazily: each chunk is checked (exit 1 or 2)
        assert all(code in (0, 1) for code, _ in results), results


SOURCE_CASES = {name: NYDUS_CASES[name] for name in (
    "index-deep", "size-lies", "manifest-symlink-out", "manifest-fifo", "config-symlink-out",
    "layer-symlink-out", "layer-fifo", "manifest-deep", "config-deep", "layer-size-lies",
    "config-size-lies", "digest-path-trick", "manifest-symlink-in", "config-escapes", "nested-index")}
SOURCE_CASES |= {
    "layer-tampered": (_tamper_layer, ("does not match its digest",)),
    "layer-count": (_manifest_edit(lambda m: m["layers"].pop()), ("diff_ids",)),
    "layer-media-unknown": (_manifest_edit(lambda m: m["layers"][0].update(mediaType=ESC)), ("media type",)),
}


@pytest.fixture(scope="module")
def source_batch(images):
    batch = Batch(images)
    for case, (edit, _) in SOURCE_CASES.items():
        def build(work: pathlib.Path, edit: Edit = edit) -> list[list[str]]:
            image = copy_with(images, "src", edit, work)
            return source_verbs(f"oci:{image}:v1", images / "nydus", work)
        batch.add(case, build)
    batch.run()
    return batch


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_crafted_source_layouts(source_batch, case):
    words = SOURCE_CASES[case][1]
    cases, results = source_batch.outcome(case)
    if words is not None:
        assert_refused(results, cases, *words, finding=case == "layer-count")
    else:   # check finds the changed config
        assert [code for code, _ in results] == [0, 0, 1 if case == "config-escapes" else 0, 0], results


# --- crafted oci-archive and docker-archive tars ---------------------------------------------

Members = list[tuple[str, bytes | None, str]]


def _renamed(old: str, new: str) -> Callable[[Members], Members]:
    return lambda ms: [(new if n == old else n, d, k) for n, d, k in ms]


def _blob_named(images: pathlib.Path, which: str) -> str:
    lay = Layout(images / "src")
    m = lay.manifest()
    digest = {"manifest": lay.index()["manifests"][0]["digest"], "config": m["config"]["digest"],
              "layer": m["layers"][0]["digest"]}[which]
    return "blobs/sha256/" + digest[7:]


def _docker_manifest(f: Callable[[Any], Any]) -> Callable[[Members], Members]:
    def edit(ms: Members) -> Members:
        doc = json.loads(ms[0][1] or b"")
        new = f(doc)    # a new document, or None when `f` changed it in place
        doc = new if isinstance(new, (dict, list)) else doc
        return [("manifest.json", json.dumps(doc).encode(), "f")] + ms[1:]
    return edit


def _docker_layer_tampered(ms: Members) -> Members:
    name, data, kind = ms[2]
    raw = bytearray(data or b"")
    raw[700] ^= 1
    return ms[:2] + [(name, bytes(raw), kind)] + ms[3:]


# name -> (kind, edit of the members, the archive bytes after it, words; None: accepted)
ARCHIVE_CASES: dict[str, tuple[str, Any, Callable[[bytes], bytes], tuple[str, ...] | None]] = {
    "oci-valid": ("oci", lambda ms: ms, lambda b: b, None),
    "oci-absolute-names": ("oci", lambda ms: [("/" + n, d, k) for n, d, k in ms], lambda b: b, None),
    "oci-dotdot-index": ("oci", _renamed("index.json", "../../index.json"), lambda b: b, ("index.json is missing",)),
    "oci-duplicate-index": ("oci", lambda ms: ms + [("index.json", b'{"manifests": 7}', "f")], lambda b: b,
                            ("index.json", "manifests")),
    "oci-symlink-index": ("oci", lambda ms: [m for m in ms if m[0] != "index.json"]
                          + [("index.json", None, "l:/etc/passwd")], lambda b: b, ("index.json", "symlink")),
    "oci-truncated": ("oci", lambda ms: ms, lambda b: b[:len(b) // 2], ("archive",)),
    "oci-garbage": ("oci", lambda ms: ms, lambda b: bytes(range(256)) * 8, ("not a readable tar",)),
    "oci-gzip": ("oci", lambda ms: ms, lambda b: gzip.compress(b), ("compressed",)),
    "docker-valid": ("docker", lambda ms: ms, lambda b: b, None),
    "docker-manifest-deep": ("docker", lambda ms: [("manifest.json", _deep(100_000), "f")] + ms[1:], lambda b: b,
                             ("manifest.json", "nested too deep")),
    "docker-manifest-object": ("docker", _docker_manifest(lambda d: {"a": d}), lambda b: b, ("manifest.json",)),
    "docker-entry-types": ("docker", _docker_manifest(lambda d: [{"Config": 5, "Layers": "x", "RepoTags": 7}]),
                           lambda b: b, ("manifest.json",)),
    "docker-repotags-int": ("docker", _docker_manifest(lambda d: d[0].update(RepoTags=7)), lambda b: b, None),
    "docker-layer-dotdot": ("docker", _docker_manifest(lambda d: d[0]["Layers"].__setitem__(0, "../../../etc/passwd")),
                            lambda b: b, ("missing from the archive",)),
    "docker-config-dotdot": ("docker", _docker_manifest(lambda d: d[0].update(Config="/../../etc/hostname")),
                             lambda b: b, ("missing from the archive",)),
    "docker-layer-count": ("docker", _docker_manifest(lambda d: d[0]["Layers"].pop()), lambda b: b, ("diff_ids",)),
    "docker-layer-tampered": ("docker", _docker_layer_tampered, lambda b: b, ("digest",)),
    "docker-layer-symlink": ("docker", lambda ms: ms[:2] + [(ms[2][0], None, "l:/etc/passwd")] + ms[3:],
                             lambda b: b, ("symlink",)),
    "docker-no-manifest": ("docker", lambda ms: ms[1:], lambda b: b, ("manifest.json",)),
    # links inside the archive read as their target (docker save links a layer two images share)
    "docker-layer-symlink-in": ("docker", lambda ms: ms[:2] + [("shared/layer.tar", ms[2][1], "f"),
                                                               (ms[2][0], None, "l:../shared/layer.tar")] + ms[3:],
                                lambda b: b, None),
    "oci-blob-hardlink-in": ("oci", lambda ms: [m if not m[0].startswith("blobs/") else
                                                (m[0], None, "h:kept/" + m[0]) for m in ms]
                             + [("kept/" + m[0], m[1], "f") for m in ms if m[0].startswith("blobs/")],
                             lambda b: b, None),
    "docker-layer-symlink-dotdot": ("docker", lambda ms: ms[:2] + [(ms[2][0], None, "l:../../../etc/passwd")]
                                    + ms[3:], lambda b: b, ("symlink", "out of the archive")),
    "docker-layer-symlink-loop": ("docker", lambda ms: ms[:2] + [(ms[2][0], None, "l:../loop/layer.tar"),
                                                                 ("loop/layer.tar", None, "l:../" + ms[2][0])]
                                  + ms[3:], lambda b: b, ("symlink", "not a regular member")),
}


@pytest.fixture(scope="module")
def archive_batch(images):
    batch = Batch(images)
    for case, (kind, edit, after, _) in ARCHIVE_CASES.items():
        def build(work: pathlib.Path, kind: str = kind, edit: Any = edit, after: Any = after) -> list[list[str]]:
            members = layout_members(images / "src") if kind == "oci" else docker_members(images / "src")
            path = work / "image.tar"
            path.write_bytes(after(tar_of(edit(members))))
            ref = f"oci-archive:{path}:v1" if kind == "oci" else f"docker-archive:{path}"
            return source_verbs(ref, images / "nydus", work)
        batch.add(case, build)
    batch.run()
    return batch


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_crafted_archives(archive_batch, case):
    words = ARCHIVE_CASES[case][3]
    cases, results = archive_batch.outcome(case)
    if words is not None:
        assert_refused(results, cases, *words)
    else:
        assert [code for code, _ in results] == [0, 0, 0, 0], results


# --- hypothesis: one field of the index, manifest or config replaced -------------------------

HOSTILE_VALUES = [None, True, -1, 0, 1 << 64, 1.5e308, "", ESC, "sha256:../../etc/passwd",
                  "sha256:" + "0" * 64, "x" * 70_000, [], {}, [[[[[]]]]], {"a": {"b": {}}}, [ESC] * 3]


def _paths(doc: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, at + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, at + (i,))
    return out


def _replaced(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


DELETE = object()


@settings(max_examples=16, deadline=None, derandomize=DERANDOMIZE, database=None)
@given(base=st.sampled_from(["nydus", "src"]), which=st.sampled_from(["index", "manifest", "config"]),
       pick=st.floats(0, 1, exclude_max=True), value=st.sampled_from(HOSTILE_VALUES + [DELETE]))
def test_mutated_fields_get_a_clean_answer(images, base, which, pick, value):
    work = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=images))
    try:
        shutil.copytree(images / base, work / "image")
        lay = Layout(work / "image")
        doc = {"index": lay.index, "manifest": lay.manifest, "config": lay.config}[which]()
        paths = _paths(doc)
        path = paths[int(pick * len(paths))]
        if value is DELETE and not path:
            value = None
        doc = _replaced(doc, path, value)
        {"index": lay.write_index, "manifest": lay.set_manifest, "config": lay.set_config}[which](doc)
        (work / "mnt").mkdir()
        tag = "n" if base == "nydus" else "v1"
        ref = f"oci:{work / 'image'}:{tag}"
        cases = nydus_verbs(ref, work, mount=False) if base == "nydus" else \
            source_verbs(ref, images / "nydus", work)
        before = snapshot(images)
        results = drive(cases, {"NYDUSFS_CACHE_DIR": str(work / "cache")})
        check_runs(cases, results, work)
        after = snapshot(images)
        mine = str(work.relative_to(images))
        assert not [k for k in set(before) | set(after) if before.get(k) != after.get(k)
                    and k.split(os.sep)[0] != mine]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- crafted oci: targets of convert -----------------------------------------------------------

def _target_blobs_symlink(sub: str) -> Callable[[pathlib.Path, pathlib.Path], None]:
    def edit(target: pathlib.Path, outside: pathlib.Path) -> None:
        shutil.move(target / sub, outside / "moved")
        (target / sub).symlink_to(outside / "moved")
    return edit


def _target_blob(how: str) -> Callable[[pathlib.Path, pathlib.Path], None]:
    """The bootstrap layer blob convert will write, held damaged or as a symlink out."""
    def edit(target: pathlib.Path, outside: pathlib.Path) -> None:
        lay = Layout(target)
        p = lay.blob_path(lay.manifest()["layers"][-1]["digest"])
        data = p.read_bytes()
        p.unlink()
        if how == "damaged":
            p.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        else:
            (outside / "blob").write_bytes(data)
            p.symlink_to(outside / "blob")
    return edit


# name -> (edit of the existing target layout and a directory outside it, words; None: accepted)
TARGET_CASES: dict[str, tuple[Callable[[pathlib.Path, pathlib.Path], None], tuple[str, ...] | None]] = {
    "blobs-symlink": (_target_blobs_symlink("blobs"), ("blobs is a symlink",)),
    "sha256-symlink": (_target_blobs_symlink("blobs/sha256"), ("blobs/sha256 is a symlink",)),
    "index-deep": (lambda t, _: (t / "index.json").write_bytes(_deep(100_000)), ("index.json", "nested too deep")),
    "index-huge": (lambda t, _: (t / "index.json").write_bytes(b"[" + b" " * (5 << 20) + b"]"),
                   ("index.json", "more than")),
    "index-fifo": (lambda t, _: ((t / "index.json").unlink(), os.mkfifo(t / "index.json")), ("index.json",)),
    "blob-damaged": (_target_blob("damaged"), None),
    "blob-symlink-out": (_target_blob("symlink"), None),
}


@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_crafted_convert_targets(images, case):
    edit, words = TARGET_CASES[case]
    work = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=images))
    try:
        target, outside = work / "target", work / "outside"
        shutil.copytree(images / "nydus", target)
        outside.mkdir()
        edit(target, outside)
        before = snapshot(outside)
        argv = ["convert", f"oci:{images / 'src'}:v1", f"oci:{target}:n", "--no-progress", "--no-cache"]
        [(code, err)] = drive([argv], {"NYDUSFS_CACHE_DIR": str(work / "cache")})
        assert "Traceback" not in err and "internal error" not in err, err
        assert snapshot(outside) == before      # nothing written where a symlink led
        assert not [n for n in os.listdir(work) if n.startswith(".target")]
        if words is not None:
            assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
            for w in words:
                assert w in err, (w, err)
            return
        assert code == 0, err
        lay = Layout(target)    # every blob the image names is a regular file with its digest
        m = lay.manifest()
        for d in [m["config"]] + m["layers"]:
            p = lay.blob_path(d["digest"])
            assert not p.is_symlink() and sha(p.read_bytes()) == d["digest"], d
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_image_text_reaches_the_terminal_escaped(images, tmp_path):
    """Annotations, history and config values holding terminal controls: the human output of
    check, explore --report and dump shows them escaped (the runs above only see stderr)."""
    from bounded import run

    nydus = tmp_path / "nydus"
    copy_with(images, "nydus", NYDUS_CASES["annotation-escapes"][0], nydus)
    src = tmp_path / "src"
    copy_with(images, "src", SOURCE_CASES["config-escapes"][0], src)
    env = {"NYDUSFS_CACHE_DIR": str(tmp_path / "cache")}
    runs = [("check", f"oci:{nydus / 'image'}:n"), ("check", f"oci:{src / 'image'}:v1", f"oci:{nydus / 'image'}:n"),
            ("explore", "--report", f"oci:{src / 'image'}:v1"), ("explore", "--report", f"oci:{nydus / 'image'}:n"),
            ("dump", f"oci:{nydus / 'image'}:n")]
    for args in runs:
        r = run(*args, env=env)
        assert r.returncode in (0, 1), (args, r.stderr[-2000:])
        assert b"\x1b" not in r.stdout + r.stderr and b"\xc2\x9b" not in r.stdout + r.stderr, args
    r = run("check", f"oci:{nydus / 'image'}:n", env=env)
    assert b"\\x1b]0;owned" in r.stdout    # shown, as an escape
