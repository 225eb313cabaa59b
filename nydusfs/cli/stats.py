"""`nydusfs stats`: what a running mount fetched and served, and the order files were first read."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .args import seconds

HELP = "show what a running mount fetched and served, and the order files were first read"
DESCRIPTION = """\
Ask the server of MOUNTPOINT (a running `nydusfs mount`) for its counters, through the control
socket it keeps beside its pid file (the default location for the mountpoint, or --pid-file).

Shown per blob: reads of the blob (file or registry ranges) and their bytes, chunks served
from the chunk cache and loaded from the blob, failed chunk loads; for docker:// mounts also
the registry's requests, bytes, retries and errors, and the on-disk cache's hits and misses.
Then the files in the order they were first read, with the seconds since the mount, and the
totals. The first 100000 files read are recorded; later ones are counted in the totals only.

--json prints one JSON object (docs/stats.md); paths are strings decoded as os.fsdecode does
(bytes that are not UTF-8 as lone surrogates \\udc80-\\udcff; os.fsencode gives the bytes back).
--prefetch-list prints the first-read order as a prefetch pattern file for
`nydusfs convert --prefetch-patterns FILE`: one absolute path per line. Paths the format
cannot hold (a name with a newline, a path ending in white space) are left out, each named
on stderr.

A MOUNTPOINT that is not a nydusfs mount, or whose server is gone, is one error line (exit 2).
"""


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--prefetch-list", action="store_true",
                     help="print the first-read order as a prefetch pattern file for "
                     "`convert --prefetch-patterns`")
    p.add_argument("--pid-file", metavar="FILE",
                   help="the pid file given to `nydusfs mount --pid-file` (default: its default)")
    p.add_argument("--timeout", type=seconds(3600), default=30.0, metavar="SECONDS",
                   help="how long to wait for the server's answer (default 30)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..fuse.control import ask, socket_path
    from ..fuse.mounts import (FSTYPE, MountError, canonical_path, default_pid_file, is_stale,
                               mount_entry)

    path = canonical_path(args.mountpoint)
    entry = mount_entry(path)
    if entry is None:
        raise MountError(f"{path}: not mounted")
    if entry.fstype != FSTYPE:
        raise MountError(f"{path}: not a nydusfs mount (it is {entry.fstype} from {entry.source})")
    if is_stale(path):
        raise MountError(f"{path}: its server is gone (a dead FUSE mount); run "
                         f"`nydusfs umount {path}`")
    pid_file = os.path.abspath(args.pid_file) if args.pid_file else default_pid_file(path)
    doc = ask(socket_path(pid_file), path, args.timeout)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.prefetch_list:
        _prefetch_list(doc)
    else:
        _tables(doc)
    return 0


# --- prefetch list ------------------------------------------------------------------------------

def expressible(path: bytes) -> bool:
    """Whether `path` survives convert's reading of a pattern file as exactly this pattern."""
    from ..util.prefetch import parse_patterns

    return parse_patterns(path + b"\n") == ([path], [])


def _prefetch_list(doc: dict[str, Any]) -> None:
    from .show import shown

    lines = []
    for f in doc["first_reads"]:
        if f["path"] is None:
            _warn(f"inode {f['ino']}: no path found in the image; left out of the prefetch list")
            continue
        path = os.fsencode(f["path"])
        if expressible(path):
            lines.append(path + b"\n")
        else:
            _warn(f"{shown(path)}: a prefetch pattern file cannot hold this path (a newline in a "
                  "name, or white space at its end); left out")
    if doc["first_reads_truncated"]:
        _warn(f"only the first {doc['first_reads_cap']} files read were recorded; the list ends there")
    sys.stdout.flush()
    sys.stdout.buffer.write(b"".join(lines))


def _warn(text: str) -> None:
    print(f"nydusfs stats: warning: {text}", file=sys.stderr)


# --- tables ---------------------------------------------------------------------------------

def _tables(doc: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from .show import console, shown

    out = console()
    t = doc["totals"]
    out.print(Text(f"{shown(doc['mountpoint'])}: {shown(doc['image'])} (pid {doc['pid']}), "
                   f"mounted {doc['seconds']:.1f} s ago"))
    out.print(Text(f"{t['read_requests']} read requests, {t['read_bytes']} bytes served, "
                   f"{t['files_read']} files read; blobs: {t['reads']} reads, {t['bytes']} "
                   f"bytes, chunk cache {t['chunk_hits']} hits / {t['chunk_misses']} misses, "
                   f"{t['errors']} errors; {t['faults']} faults logged"))
    reg = t.get("registry")
    if reg is not None:
        out.print(Text(f"registry: {reg['requests']} requests, {reg['bytes']} bytes, "
                       f"{reg['retries']} retries, {reg['errors']} errors"))
    columns = ["#", "blob id", "reads", "bytes", "chunk hits", "chunk misses", "errors"]
    if doc["registry"]:
        columns += ["requests", "fetched bytes", "retries", "fetch errors", "disk hits",
                    "disk misses"]
    table = Table(title="Blobs")
    for col in columns:
        table.add_column(col, overflow="fold", min_width=64 if col == "blob id" else None,
                         justify="left" if col == "blob id" else "right")
    for b in doc["blobs"]:
        row: list[Any] = ["-" if b["index"] is None else str(b["index"]), Text(shown(b["blob_id"]))]
        row += [_n(b.get(k)) for k in ("reads", "bytes", "chunk_hits", "chunk_misses", "errors")]
        if doc["registry"]:
            r = b.get("registry") or {}
            row += [_n(r.get(k)) for k in ("requests", "bytes", "retries", "errors", "cache_hits",
                                            "cache_misses")]
        table.add_row(*row)
    out.print(table)
    files = Table(title=f"First reads ({len(doc['first_reads'])}"
                        f"{', the recorded maximum' if doc['first_reads_truncated'] else ''})")
    files.add_column("#", justify="right")
    files.add_column("seconds", justify="right")
    files.add_column("path", overflow="fold")
    for i, f in enumerate(doc["first_reads"], 1):
        where = Text(shown(f["path"]) if f["path"] is not None else f"(inode {f['ino']}, no path)")
        files.add_row(str(i), f"{f['seconds']:.3f}", where)
    out.print(files)


def _n(value: Any) -> str:
    return "-" if value is None else str(value)
