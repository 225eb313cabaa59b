"""`nydusfs mount`: serve an image read-only through FUSE (pyfuse3 is imported only when run)."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from ..errors import UsageError
from .args import (MAX_THREADS, add_platform, add_registry_options, integer, output_path, platform_for,
                   registry_options, seconds)

HELP = "mount an image read-only through FUSE"
DESCRIPTION = """\
Mount a Nydus image (RAFS v5 or v6) read-only at MOUNTPOINT, so that any tool sees the merged
image as its OCI layers would unpack. BOOTSTRAP is a bare (final or merged) bootstrap or a
Nydus layer file; data blobs are looked up by blob id in the --blob-dir directories (a layer
file's own blob is the file itself). BOOTSTRAP may also be a Nydus image reference
(oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
docker://HOST/REPO[:TAG|@DIGEST]): its bootstrap layer is extracted once into the cache
($NYDUSFS_CACHE_DIR, else $XDG_CACHE_HOME/nydusfs, else ~/.cache/nydusfs) and blobs are read in
place from the layout or archive, or lazily from the registry (--platform picks the image of an
index).

By default the command returns once the mount answers requests and keeps serving from a
background process; it fails (exit 2, nothing left mounted) if the image cannot be opened or
the mount does not come up. Stop it with `nydusfs umount MOUNTPOINT`, or send SIGTERM to the
pid in the pid file: the server unmounts on its way out. With --foreground the command stays
attached, logs to stderr and unmounts on Ctrl-C or SIGTERM.

Every chunk is checked against its own digest when it is read from its blob (a chunk that does
not match, or that records no digest, reads as EIO), and a file whose chunk records do not tile
it as the format requires reads as EIO whatever the options; --no-verify skips only the digest
check. --verify-chunks, once the switch that turned checking on, is accepted and changes nothing.

BOOTSTRAP may be a registry image, docker://HOST[:PORT]/REPO[:TAG|@DIGEST]: the mount is ready
once the manifest, the config and the bootstrap layer are fetched; file data is fetched when
read, with HTTP range requests, into an on-disk chunk cache (--cache-dir) shared by concurrent
mounts and kept across restarts. A read whose fetch still fails after --retry-time of retries
fails with EIO (logged once per blob); the next read tries again, so reads work again without
a remount once the registry is back. Background prefetch (the image's prefetch table, then
everything with --prefetch-all) yields to on-demand reads and keeps to --bandwidth-limit. The
options of the "registry images" group are refused for local images. See docs/mount.md and
docs/registry.md.

The bootstrap, blob directories, log and pid files must not lie inside MOUNTPOINT (the server
would wait on its own mount): such paths are refused before mounting.

Mount options: ro, default_permissions (the kernel checks the image's modes), nosuid and
nodev (see --suid, --dev), fsname=nydusfs:<bootstrap name>, type fuse.nydusfs. Writes fail
with EROFS. A missing or corrupt blob makes reads of the files that use it fail with EIO
(logged once per blob and chunk); everything else keeps working. A size or mtime past what
struct stat holds is shown clamped to 2^63-1 and logged once; a directory entry whose inode
cannot be decoded is left out of the listing. The log escapes control characters.
"""

RETRY_TIME = 20.0          # seconds a registry fetch is retried before the read fails
REQUEST_TIMEOUT = 10.0     # seconds per request phase (connect, each read of the answer)
PREFETCH_THREADS = 4
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_SIZE = (1 << 63) - 1


def parse_size(text: str) -> int:
    """Bytes from '123', '64K', '32M', '1G' (binary units; an optional 'iB'/'B' suffix)."""
    m = re.fullmatch(r"\s*(\d{1,20})\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    value = int(m.group(1)) * SIZE_UNITS[m.group(2).lower()] if m else -1
    if not 0 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"not a size: {text[:60]!r} (use e.g. 64M, 1G, 1048576)")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("mount", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", metavar="BOOTSTRAP", help="bootstrap, Nydus layer file or Nydus image reference")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable; searched in order)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay attached, log to stderr, unmount on Ctrl-C/SIGTERM")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging: every request, tracebacks of failed requests")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="serve chunks without checking them against their digests, as nydusd "
                   "does (default: every chunk is checked once, when it enters the chunk cache; "
                   "a mismatch reads as EIO)")
    p.add_argument("--verify-chunks", action="store_true", help=argparse.SUPPRESS)  # the old default-off switch
    p.add_argument("--cache-size", type=parse_size, default=None, metavar="N",
                   help="memory for decompressed chunks, e.g. 64M (default 8M; 0 disables); "
                   "the kernel page cache keeps file data on top of it")
    p.add_argument("--threads", type=integer(1, MAX_THREADS), default=None, metavar="N",
                   help=f"worker threads for reads with more than 2 MiB to decompress, and "
                   f"prefetch, up to {MAX_THREADS} (default: the number of CPUs, at least 4)")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users access the mount (non-root needs user_allow_other "
                   "in /etc/fuse.conf); permissions still follow the image's modes")
    p.add_argument("--suid", action="store_true",
                   help="honour setuid/setgid bits and file capabilities (default: nosuid)")
    p.add_argument("--dev", action="store_true",
                   help="allow opening the image's device nodes (default: nodev)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="do not warm the files of the image's prefetch table after mounting")
    p.add_argument("--pid-file", metavar="FILE",
                   help="where the server writes its pid (default: /run/nydusfs/<mountpoint>.pid "
                   "as root, else under $XDG_RUNTIME_DIR); removed when it stops. The control "
                   "socket of `nydusfs stats` lies beside it (same name, .sock)")
    p.add_argument("--log-file", metavar="FILE",
                   help="append the server's log (faults, prefetch, errors) to FILE "
                   "(default: stderr with --foreground, none in the background)")
    add_platform(p, "with an image reference: the Nydus image of this platform from an index")
    add_registry_options(p)
    reg = p.add_argument_group("registry images (docker://)")
    reg.add_argument("--cache-dir", metavar="DIR",
                     help="on-disk chunk cache (default: blobs/ in $NYDUSFS_CACHE_DIR, else "
                     "$XDG_CACHE_HOME/nydusfs, else ~/.cache/nydusfs)")
    reg.add_argument("--cache-limit", type=parse_size, metavar="SIZE",
                     help="keep the cache under SIZE (e.g. 10G): least recently used whole "
                     "blobs are evicted, never one a mount is using (default: no limit)")
    reg.add_argument("--prefetch-all", action="store_true",
                     help="once the mount is ready, fetch every blob into the cache in the "
                     "background (after the prefetch table's chunks)")
    reg.add_argument("--prefetch-threads", type=integer(1, 64), metavar="N",
                     help="parallel requests of --prefetch-all (default 4)")
    reg.add_argument("--bandwidth-limit", type=parse_size, metavar="RATE",
                     help="bytes per second for background prefetch, e.g. 20M (default: no "
                     "limit); on-demand reads are never throttled and go first")
    reg.add_argument("--retry-time", type=seconds(3600), metavar="SECONDS",
                     help="how long a fetch is retried before the read fails with EIO "
                     f"(default {RETRY_TIME:g}; one request may add up to {REQUEST_TIMEOUT:g} s)")
    p.set_defaults(run=run)


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path is not None else None


def run(args: argparse.Namespace) -> int:
    from ..fuse.daemon import DEFAULT_CACHE_BYTES, MountConfig, mount
    from ..fuse.mounts import canonical_path
    from ..image.nydus import absolute

    for d in args.blob_dir:
        if not os.path.isdir(d):
            raise UsageError(f"--blob-dir {d}: not a directory")
    output_path("--log-file", args.log_file)
    cfg = MountConfig(
        bootstrap=absolute(args.bootstrap),
        mountpoint=canonical_path(args.mountpoint),
        blob_dirs=[os.path.abspath(d) for d in args.blob_dir],
        foreground=args.foreground,
        debug=bool(getattr(args, "debug", False)),
        verify=args.verify,
        cache_bytes=DEFAULT_CACHE_BYTES if args.cache_size is None else args.cache_size,
        allow_other=args.allow_other,
        suid=args.suid,
        dev=args.dev,
        prefetch=not args.no_prefetch,
        pid_file=_abs(args.pid_file),
        log_file=_abs(args.log_file),
    )
    if args.threads is not None:
        cfg.threads = args.threads
    cfg.platform = platform_for(args.bootstrap, args.platform)
    cfg.source_options = registry_options(args)
    _cache_options(args, cfg)
    _refuse_paths_inside(cfg)
    return mount(cfg)


def _refuse_paths_inside(cfg: Any) -> None:
    """Paths the server opens must not lie inside its own mount: it would wait on itself."""
    from ..util.limits import inside

    named = [("BOOTSTRAP", cfg.bootstrap)] + [("--blob-dir", d) for d in cfg.blob_dirs]
    named += [("--pid-file", cfg.pid_file), ("--log-file", cfg.log_file),
              ("--cache-dir", cfg.source_options.get("cache_dir"))]
    for option, path in named:
        if path is not None and inside(path, cfg.mountpoint):
            raise UsageError(f"{option} {path}: inside the mountpoint {cfg.mountpoint} (the "
                             "server would wait on its own mount)")


REGISTRY_FLAGS = ("cache_dir", "cache_limit", "prefetch_all", "prefetch_threads",
                  "bandwidth_limit", "retry_time")


def _cache_options(args: argparse.Namespace, cfg: Any) -> None:
    """The docker:// cache options into cfg; refused for local images (they would do nothing)."""
    if not cfg.bootstrap.startswith("docker://"):
        given = [f"--{f.replace('_', '-')}" for f in REGISTRY_FLAGS if getattr(args, f) not in (None, False)]
        if given:
            raise UsageError(f"{given[0]}: applies to registry images (docker://...) only, "
                             f"not to {args.bootstrap}")
        return
    if args.bandwidth_limit == 0:
        raise UsageError("--bandwidth-limit 0: give a rate above zero (or leave it out: no limit)")
    from ..registry.cache import default_cache_dir

    cfg.source_options.update(
        cache_dir=os.path.abspath(args.cache_dir) if args.cache_dir else str(default_cache_dir()),
        cache_limit=args.cache_limit, bandwidth_limit=args.bandwidth_limit,
        retry_time=RETRY_TIME if args.retry_time is None else args.retry_time,
        timeout=REQUEST_TIMEOUT)
    cfg.prefetch_all = args.prefetch_all
    cfg.prefetch_threads = args.prefetch_threads or PREFETCH_THREADS
