"""Mount an image and serve it, attached (`--foreground`) or from a background process.

Order of events: open the image (format errors are reported right away), mount (the mount is
live from here), then either serve in this process, or fork: the child serves and reports
through a pipe once the mount answers; the parent returns only then, with the child's error if
there was one. Whatever ends the serving (signal, error), the server unmounts on its way out.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import signal
import sys
import time
from typing import Any

import pyfuse3
import trio

from ..image.nydus import open_any
from ..util.show import EscapingFormatter
from .control import Control, socket_path
from .mounts import (FSTYPE, MountError, default_pid_file, is_stale, mount_entry, remove_pid_file,
                     write_pid_file)
from .ops import Operations
from .prefetch import BlobPrefetcher, names_files
from .serve import SIGNALS, EarlySignals, serve
from .skipopen import install as skip_open

log = logging.getLogger("nydusfs.fuse")

DEFAULT_CACHE_BYTES = 8 << 20


@dataclasses.dataclass
class MountConfig:
    bootstrap: str                 # absolute paths: the background server runs in /
    mountpoint: str
    blob_dirs: list[str] = dataclasses.field(default_factory=list)
    foreground: bool = False
    debug: bool = False
    verify: bool = True        # chunk digests checked as chunks enter the cache
    cache_bytes: int = DEFAULT_CACHE_BYTES
    threads: int = max(4, os.cpu_count() or 1)
    allow_other: bool = False
    suid: bool = False
    dev: bool = False
    prefetch: bool = True
    pid_file: str | None = None    # None: the default location for the mountpoint
    log_file: str | None = None
    platform: Any = None           # image.Platform of an index's image (image references)
    # options of the image source: the registry options and, for docker:// images, the chunk
    # cache's (cache_dir, cache_limit, bandwidth_limit, retry_time, ...)
    source_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    prefetch_all: bool = False     # docker:// images: the background fetch of every blob
    prefetch_threads: int = 4


def mount_options(cfg: MountConfig, fsname: str) -> set[str]:
    opts = {"ro", "default_permissions", f"fsname={fsname}", f"subtype={FSTYPE.split('.', 1)[1]}"}
    opts.add("suid" if cfg.suid else "nosuid")
    opts.add("dev" if cfg.dev else "nodev")
    if cfg.allow_other:
        opts.add("allow_other")
    return opts


def _fsname(bootstrap: str) -> str:
    # shown as the mount's source; libfuse splits options at commas, so keep it plain
    name = re.sub(r"[^A-Za-z0-9._+@:-]", "_", os.path.basename(bootstrap))[:64]
    return f"nydusfs:{name}"


def _check_mountpoint(path: str) -> None:
    if is_stale(path):
        raise MountError(f"{path}: a dead FUSE mount is still there; run `nydusfs umount {path}` first")
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path}: not a directory")
    entry = mount_entry(path)
    if entry is not None and entry.fstype == FSTYPE:
        raise MountError(f"{path}: a nydusfs image is already mounted there "
                         f"(run `nydusfs umount {path}` first)")


def _setup_logging(cfg: MountConfig, stream: Any) -> None:
    root = logging.getLogger("nydusfs")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    if cfg.log_file:
        handler: logging.Handler = logging.FileHandler(cfg.log_file, encoding="utf-8",
                                                       errors="backslashreplace")
    elif stream is not None:
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s nydusfs[%(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if cfg.debug else logging.INFO)
    root.propagate = False


def mount(cfg: MountConfig) -> int:
    """Mount and serve; returns the exit status (raises MountError/NydusfsError on failure)."""
    # glibc's allocator is left as it is: with chunk-sized buffers mapped and unmapped each time
    # (M_MMAP_THRESHOLD below the chunk size) every decompressed page was a fresh page fault,
    # about a fifth of the server's CPU on a cold read; reused heap buffers cost ~10 MB of peak RSS
    _setup_logging(cfg, sys.stderr if cfg.foreground else None)
    _check_mountpoint(cfg.mountpoint)
    image = open_any(cfg.bootstrap, cfg.blob_dirs, cfg.cache_bytes, cfg.platform,
                     **cfg.source_options)  # file or image reference
    ops = Operations(image, verify=cfg.verify, threads=cfg.threads, debug=cfg.debug)
    if image.remote_blobs:      # a read that may wait on the network: never in the trio thread
        ops.remote_blobs()
    early = EarlySignals()
    early.install()
    try:
        pyfuse3.init(ops, cfg.mountpoint, mount_options(cfg, _fsname(cfg.bootstrap)))
    except RuntimeError as e:
        image.close()
        raise MountError(f"cannot mount {cfg.mountpoint}: {e} (needs /dev/fuse, and root or the "
                         "fusermount3 helper; --allow-other also needs user_allow_other in "
                         "/etc/fuse.conf)") from None
    ops.skip_open = skip_open()
    log.debug("kernel skips OPEN/OPENDIR: %s", ops.skip_open)
    if cfg.foreground:
        if _run(ops, cfg, early, ready=_log_ready(cfg)):
            raise MountError(f"serving {cfg.mountpoint} failed (see the log)")
        return 0
    return _background(ops, cfg, early)


def _log_ready(cfg: MountConfig) -> Any:
    def ready(error: str | None) -> None:
        if error is None:
            log.info("serving %s at %s (pid %d)", cfg.bootstrap, cfg.mountpoint, os.getpid())
        else:
            log.error("%s", error)
    return ready


def _run(ops: Operations, cfg: MountConfig, early: EarlySignals, ready: Any) -> int:
    """Serve in this process until unmounted or signalled; always unmount on the way out.

    Returns 0 after a clean stop, 1 when the mount never became ready or the loop failed.
    """
    pid_file = None
    failed: list[str] = []
    prefetch_all: BlobPrefetcher | None = None

    def report(error: str | None) -> None:
        nonlocal prefetch_all
        if error is not None:
            failed.append(error)
        ready(error)
        if error is None and cfg.prefetch_all and ops.image.remote_blobs:
            prefetch_all = BlobPrefetcher(ops.image, ops.faults, cfg.prefetch_threads,
                                          cfg.source_options.get("bandwidth_limit"))
            prefetch_all.start()

    warm = cfg.prefetch and (names_files(ops.image) or not ops.image.remote_blobs)
    try:
        pid_file = _write_pid_file(cfg)
        ops.control = Control(socket_path(pid_file), cfg.bootstrap, cfg.mountpoint) if pid_file else None
        trio.run(functools.partial(serve, ops, cfg.mountpoint, report, early,
                                   prefetch_budget=cfg.cache_bytes // 2 if warm else None))
    except MountError as e:
        report(str(e))
    except BaseException as e:  # the loop itself failed: report, then still unmount
        log.error("server stopped: %s: %s", type(e).__name__, e, exc_info=cfg.debug)
        report(f"server stopped: {type(e).__name__}: {e}")
    finally:
        pyfuse3.close(unmount=True)
        if prefetch_all is None or prefetch_all.stop():
            ops.image.close()
        else:   # a prefetch request is still retrying: the process ends it (the cache is crash-safe)
            log.info("prefetch-all: requests still in flight left to end with the process")
        if pid_file:
            remove_pid_file(pid_file, os.getpid())
    log.debug("unmounted %s", cfg.mountpoint)
    return 1 if failed else 0


def _write_pid_file(cfg: MountConfig) -> str | None:
    path = cfg.pid_file or default_pid_file(cfg.mountpoint)
    try:
        write_pid_file(path, os.getpid(), cfg.mountpoint, make_dir=not cfg.pid_file)
    except OSError as e:
        if cfg.pid_file:
            raise MountError(f"cannot write pid file {path}: {e.strerror}") from None
        log.warning("no pid file (cannot write %s: %s)", path, e.strerror)
        return None
    return path


def _background(ops: Operations, cfg: MountConfig, early: EarlySignals) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _detach(cfg)
        status = _run(ops, cfg, early, ready=_pipe_ready(w))
        os._exit(status)
    os.close(w)
    for s in SIGNALS:     # this process only waits now: let it be interrupted normally
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    message = _read_all(r)
    if message == b"ready":
        return 0
    # the server failed before the mount was ready; it unmounts on its way out, make sure
    _wait_unmounted(cfg.mountpoint, pid)
    text = message.decode("utf-8", "replace") or "the background server exited before the mount was ready"
    raise MountError(text)


def _detach(cfg: MountConfig) -> None:
    """Become a daemon: own session, cwd /, stdio on /dev/null, log to --log-file only."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _setup_logging(cfg, None)


def _pipe_ready(fd: int) -> Any:
    state: dict[str, int | None] = {"fd": fd}

    def ready(error: str | None) -> None:
        if state["fd"] is None:
            return
        try:
            os.write(state["fd"], b"ready" if error is None else error.encode("utf-8", "replace"))
        except OSError:
            pass
        os.close(state["fd"])
        state["fd"] = None
    return ready


def _read_all(fd: int) -> bytes:
    parts = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        parts.append(chunk)
    os.close(fd)
    return b"".join(parts)


def _wait_unmounted(mountpoint: str, pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    entry = mount_entry(mountpoint)
    if entry is not None and entry.fstype == FSTYPE:
        pyfuse3.close(unmount=True)
