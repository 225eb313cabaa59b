"""`nydusfs check`: is a Nydus image exactly what its OCI layers hold once applied?

The expected side comes from the layers through `oracle` (its own, deliberately plain OCI
rules); the found side is the image read through the reader, or a mounted tree as the kernel
shows it. `compare` turns both into a list of differences. Imports neither rich nor pyfuse3.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import threading
import time
from typing import Any, Protocol

from ..errors import LayerError, UsageError
from ..reader import Image, open_image
from ..util.signals import main_thread_only
from . import oracle
from .compare import FIELDS, PRECISIONS, Difference, Entry, Options, compare, counts, flatten, show_bytes
from .manifest import blob_differences
from .sides import Hashing, chunk_differences, walk_tree
from .walkcompare import audit_image, compare_image

__all__ = ["CheckOptions", "CheckResult", "Difference", "run_check", "parse_ignore", "HOST_XATTRS"]

# xattrs a host adds on its own (labels): ignored whenever a side is read from a host filesystem
HOST_XATTRS = frozenset({b"security.selinux"})
HASH = "blake3"
INODE_CACHE = 4096   # inodes (about 0.6 KB each) the reader keeps decoded during a check


class Progress(Protocol):
    def total(self, task: str, n: int | None) -> None: ...
    def tick(self, task: str, n: int) -> None: ...


class NoProgress:
    def total(self, task: str, n: int | None) -> None:
        pass

    def tick(self, task: str, n: int) -> None:
        pass


@dataclasses.dataclass
class CheckOptions:
    bootstrap: str | None
    layers: list[str]
    blob_dirs: list[str] = dataclasses.field(default_factory=list)
    through_mount: bool = False
    mounted: str | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    mtime_precision: str | None = None
    content: bool = True
    manifest: str | None = None
    workers: int = 0                      # 0: twice the CPUs, at most 8
    reader: Any = None                    # an image already open (an image reference); used
                                          # instead of opening `bootstrap`, which then names it
    mount_args: list[str] = dataclasses.field(default_factory=list)  # --through-mount: more flags
                                          # for `nydusfs mount` (platform, registry options)


@dataclasses.dataclass
class CheckResult:
    differences: list[Difference]
    target: str                           # image | mount | mounted
    expected_paths: int
    found_paths: int
    files_hashed: int
    bytes_hashed: int
    ignored: list[str]
    mtime_precision: str
    seconds: float

    @property
    def equal(self) -> bool:
        return not self.differences

    def to_json(self, opts: CheckOptions) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "target": self.target,
            "bootstrap": opts.bootstrap,
            "mounted": opts.mounted,
            "layers": list(opts.layers),
            "content": opts.content,
            "ignored": self.ignored,
            "mtime_precision": self.mtime_precision,
            "stats": {"expected_paths": self.expected_paths, "found_paths": self.found_paths,
                      "files_hashed": self.files_hashed, "bytes_hashed": self.bytes_hashed,
                      "seconds": round(self.seconds, 3)},
            "counts": counts(self.differences),
            "differences": [d.to_json() for d in self.differences],
        }


def parse_ignore(items: list[str]) -> tuple[frozenset[str], frozenset[bytes]]:
    """Field names, and `xattr:NAME` for single attributes."""
    fields, xattrs = set(), set()
    for item in items:
        if item.startswith("xattr:") and len(item) > 6:
            xattrs.add(os.fsencode(item[6:]))
        elif item in FIELDS:
            fields.add(item)
        else:
            raise UsageError(f"--ignore {item!r}: expected one of {', '.join(FIELDS)}, or xattr:NAME")
    return frozenset(fields), frozenset(xattrs)


def _workers(n: int) -> int:
    return n if n > 0 else min(8, 2 * (os.cpu_count() or 1))


def run_check(opts: CheckOptions, progress: Progress | None = None) -> CheckResult:
    started = time.perf_counter()
    progress = progress or NoProgress()
    if not opts.layers:
        raise UsageError("at least one layer is needed (--layers)")
    if opts.mounted and opts.through_mount:
        raise UsageError("--mounted and --through-mount exclude each other")
    if opts.bootstrap is None and not opts.mounted:
        raise UsageError("a BOOTSTRAP is needed unless --mounted names a tree to compare")
    if opts.manifest and opts.bootstrap is None:
        raise UsageError("--manifest needs the BOOTSTRAP (its blob table is what is checked)")
    if opts.mtime_precision is not None and opts.mtime_precision not in PRECISIONS:
        raise UsageError(f"--mtime-precision {opts.mtime_precision!r}: expected s, us or ns")
    for layer in opts.layers:
        if not os.path.exists(layer):
            raise LayerError(layer, "no such file or directory")
    for d in opts.blob_dirs:
        if not os.path.isdir(d):
            raise UsageError(f"--blob-dir {d}: not a directory")
    fields, xattrs = parse_ignore(opts.ignore)
    if not opts.content:
        fields |= {"content"}
    host = bool(opts.mounted or opts.through_mount) or any(os.path.isdir(p) for p in opts.layers)
    if host:
        xattrs |= HOST_XATTRS
    cmp = Options(ignore=fields, ignore_xattrs=xattrs, mtime_precision=opts.mtime_precision,
                  digest_algo=HASH)
    algo = HASH if "content" not in fields else None
    target = "mounted" if opts.mounted else ("mount" if opts.through_mount else "image")

    # no chunk cache: each inode is hashed once, and a cache of many tiny chunks would cost
    # per entry far more than the bytes it counts
    image: Image | None = opts.reader if opts.reader is not None else (
        open_image(opts.bootstrap, opts.blob_dirs, cache_bytes=0) if opts.bootstrap else None)
    if image is not None and opts.reader is None:
        # each inode is walked once (twice: audit, then comparison), and read by the pool
        # within IN_FLIGHT files of the walk: a mount's cache would only hold the past
        image.bound_inode_cache(INODE_CACHE)
    layer_pool = cf.ThreadPoolExecutor(max_workers=min(len(opts.layers), _workers(opts.workers)),
                                       thread_name_prefix="check-layer", initializer=main_thread_only)
    hash_pool = cf.ThreadPoolExecutor(max_workers=_workers(opts.workers), thread_name_prefix="check-hash",
                                      initializer=main_thread_only)
    try:
        sizes = [os.path.getsize(p) for p in opts.layers if not os.path.isdir(p)]
        progress.total("layers", sum(sizes) if len(sizes) == len(opts.layers) else None)
        lock = threading.Lock()

        def tick(n: int) -> None:
            with lock:
                progress.tick("layers", n)

        jobs = [layer_pool.submit(oracle.read_layer, p, algo, tick, i == 0)
                for i, p in enumerate(opts.layers)]

        def expected_tree() -> oracle.Node:
            changesets = [j.result() for j in jobs]
            jobs.clear()  # the futures hold the changesets too
            return oracle.build(changesets)  # entries and their paths: only the tree is kept

        def expected_side() -> dict[bytes, Entry]:
            return flatten(expected_tree())

        hashing = Hashing(hash_pool, lambda n: progress.tick("content", n)) if algo else None
        extra: list[Difference] = []
        if target == "image":
            assert image is not None
            # the chunk audit first, while the layers are read: its records (one per distinct
            # chunk) are let go before the image's entries are made
            audit, names, files = audit_image(image)
            if hashing is not None:
                progress.total("content", files)
            root = expected_tree()
            diffs, problems, expected_paths, found_paths = compare_image(root, image, hashing, cmp,
                                                                         HASH, names)
            del root
            extra = problems + audit
            del audit
            if opts.manifest:
                extra.extend(blob_differences(image, opts.manifest))
            diffs.extend(d for d in extra if d.field not in fields)
            return _result(opts, diffs, target, expected_paths, found_paths, hashing, fields,
                           xattrs, started)
        if target == "mount":
            assert image is not None and opts.bootstrap is not None
            from .mount import mounted

            coarse = _coarse_mtime_paths(image)
            extra.extend(chunk_differences(image))
            with mounted(opts.bootstrap, opts.blob_dirs, extra=opts.mount_args) as mnt:
                found, problems = walk_tree(mnt, hashing, HASH)
                if hashing is not None:
                    progress.total("content", hashing.files + len(hashing.deferred))
                    hashing.fill(found)  # read while the mount is up
                expected = expected_side()
                if hashing is not None:
                    hashing.run_deferred(found, expected)
            for p in coarse:
                if p in found:
                    found[p].precision = None
        else:
            assert opts.mounted is not None
            if not os.path.isdir(opts.mounted):
                raise UsageError(f"--mounted {opts.mounted}: not a directory")
            found, problems = walk_tree(opts.mounted, hashing, HASH)
        extra.extend(problems)
        if hashing is not None:
            progress.total("content", hashing.files)
        if target != "mount":
            if hashing is not None:
                hashing.fill(found)  # digests into the entries before the layers' tree is built
            expected = expected_side()
            if hashing is not None:
                hashing.run_deferred(found, expected)
        if opts.manifest:
            assert image is not None
            extra.extend(blob_differences(image, opts.manifest))
        diffs = compare(expected, found, cmp, extra)
        return _result(opts, diffs, target, len(expected), len(found), hashing, fields, xattrs,
                       started)
    finally:
        layer_pool.shutdown(wait=True, cancel_futures=True)
        hash_pool.shutdown(wait=True, cancel_futures=True)
        if image is not None:
            image.close()


def _result(opts: CheckOptions, diffs: list[Difference], target: str, expected_paths: int,
            found_paths: int, hashing: Hashing | None, fields: frozenset[str],
            xattrs: frozenset[bytes], started: float) -> CheckResult:
    ignored = sorted(fields) + [f"xattr:{show_bytes(x)}" for x in sorted(xattrs)]
    return CheckResult(
        differences=diffs, target=target, expected_paths=expected_paths, found_paths=found_paths,
        files_hashed=hashing.files if hashing else 0, bytes_hashed=hashing.bytes if hashing else 0,
        ignored=ignored, mtime_precision=opts.mtime_precision or "finest kept",
        seconds=time.perf_counter() - started)


def _coarse_mtime_paths(image: Image) -> list[bytes]:
    """Paths whose inode keeps no mtime of its own (compact RAFS v6 inodes)."""
    if image.version != 6:
        return []
    return [p for p, ino in image.walk() if not image.keeps_mtime(ino)]


def reference_entries(layers: list[str], content: bool = True) -> dict[bytes, Entry]:
    """The expected side alone (path -> Entry), for tools and tests."""
    return flatten(oracle.reference(layers, HASH if content else None))
