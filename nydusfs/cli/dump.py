"""`nydusfs dump`: the bootstrap's tables as rich tables (people) or JSON (machines)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import Any, TextIO

from .. import dump as model
from ..reader import Image, open_image

HELP = "show a bootstrap's superblock, blob, prefetch, inode, xattr and chunk tables"
DESCRIPTION = """\
Show everything a RAFS v5/v6 bootstrap holds: the superblock (every field, flags decoded), the
blob table (v5 blob + extended blob table, v6 blob table + device slots), the prefetch table,
every inode (path, inode number, type, mode, uid, gid, size, nlink, mtime with nanoseconds,
rdev, symlink target, xattrs, chunk count) and the chunks of each regular file.

BOOTSTRAP may be a bare bootstrap or a Nydus layer file (layout A or B); the bootstrap is found
inside it. Inode numbers are RAFS v5 inode numbers, or RAFS v6 nids (what the kernel shows).
With --json the output is one JSON object; its schema is documented in the README.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("dump", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", metavar="BOOTSTRAP", help="bootstrap or Nydus layer file")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable); needed by --verify")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--path", metavar="P", help="show only the inode at absolute path P, in full")
    p.add_argument("--no-chunks", action="store_true", help="leave out the per-file chunk tables")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk through the blobs and check its digest; exit 1 on failures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_image(args.bootstrap, args.blob_dir) as image:
        if args.json:
            failures = _json(image, args, sys.stdout)
        else:
            failures = _tables(image, args)
    return 1 if failures else 0


# --- JSON ------------------------------------------------------------------------------------

def _json(image: Image, args: argparse.Namespace, out: TextIO) -> int:
    if args.path:
        ino = image.resolve(args.path)
        doc: dict[str, Any] = model.inode(image, os.fsencode(args.path), ino)
        failures = 0
        if args.verify:
            doc["verify"] = [f for f in model.verify(image) if f["path"] == doc["path"]]
            failures = len(doc["verify"])
        json.dump(doc, out, indent=1)
        out.write("\n")
        return failures
    head = model.header(image)
    text = json.dumps(head, indent=1)
    out.write(text[:-2] + ',\n "inodes": [')  # stream the inodes into the same object
    first = True
    for node in model.inodes(image):
        if args.no_chunks:
            node.pop("chunks")
        out.write(("\n  " if first else ",\n  ") + json.dumps(node, separators=(",", ":")))
        first = False
    out.write("\n ]")
    failures = 0
    if args.verify:
        bad = list(model.verify(image))
        failures = len(bad)
        out.write(',\n "verify": {"failures": ' + json.dumps(bad) + "}")
    out.write("\n}\n")
    return failures


# --- rich tables ------------------------------------------------------------------------------

def _mode_text(mode: int) -> str:
    return f"{stat.filemode(mode)} {stat.S_IMODE(mode):04o}"


def _tables(image: Image, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.path:
        ino = image.resolve(args.path)
        _one_inode(console, image, model.inode(image, os.fsencode(args.path), ino))
        failures = [f for f in model.verify(image) if f["path"] == args.path] if args.verify else []
        return _report_failures(console, failures)

    head = model.header(image)
    sb = Table(title=f"Superblock: RAFS v{image.version} ({head['layout']})", show_header=True)
    sb.add_column("field")
    sb.add_column("value", overflow="fold")
    for k, v in head["superblock"].items():
        if isinstance(v, int) and not isinstance(v, bool) and k not in ("inode_count",):
            v = f"{v} (0x{v:x})" if v > 9 else str(v)
        elif isinstance(v, list):
            v = " | ".join(v) or "-"
        sb.add_row(k, str(v))
    console.print(sb)

    bt = Table(title=f"Blobs ({len(head['blobs'])})")
    for col in ("#", "blob id", "compressor", "digester", "chunks", "compressed", "uncompressed",
                "features", "readahead", "file"):
        bt.add_column(col, overflow="fold")
    for b in head["blobs"]:
        bt.add_row(str(b["index"]), b["blob_id"] + ("" if b["raw_id"] == b["blob_id"] else f"\n(stored {b['raw_id']})"),
                   b["compressor"], b["digester"], str(b["chunk_count"]), str(b["compressed_size"]),
                   str(b["uncompressed_size"]), " ".join(b["features_decoded"]) or "-",
                   f"{b['readahead_offset']}+{b['readahead_size']}", b.get("file") or "-")
    console.print(bt)

    pt = Table(title=f"Prefetch table ({len(head['prefetch'])})")
    pt.add_column("ino")
    pt.add_column("path")
    for e in head["prefetch"]:
        pt.add_row(str(e["ino"]), e["path"] or "?")
    console.print(pt)

    inode_cols = ("path", "ino", "type", "mode", "uid", "gid", "size", "nlink", "mtime", "rdev",
                  "symlink", "xattrs", "chunks")
    chunk_rows: list[tuple[str, dict[str, Any]]] = []
    table = None
    count = 0
    for node in model.inodes(image):
        if table is None:
            table = Table(title="Inodes" if count == 0 else None, show_header=count == 0)
            for col in inode_cols:
                table.add_column(col, overflow="fold")
        rdev = f"{os.major(node['rdev'])}:{os.minor(node['rdev'])}" if node["rdev"] else ""
        table.add_row(node["path"], str(node["ino"]), node["type"] + (" (implied)" if node["implicit"] else ""),
                      _mode_text(node["mode"]), str(node["uid"]), str(node["gid"]),
                      str(node["size"]), str(node["nlink"]),
                      f"{node['mtime']}.{node['mtime_nsec']:09d}", rdev, node["symlink"] or "",
                      " ".join(node["xattrs"]), str(len(node["chunks"])))
        if not args.no_chunks:
            chunk_rows.extend((node["path"], c) for c in node["chunks"])
        count += 1
        if count % 500 == 0:  # render in slices: rich measures every row of a table at once
            console.print(table)
            table = None
        if len(chunk_rows) >= 500:
            _chunk_table(console, chunk_rows)
            chunk_rows = []
    if table is not None:
        console.print(table)
    if chunk_rows:
        _chunk_table(console, chunk_rows)
    console.print(f"{count} inodes")
    failures = list(model.verify(image)) if args.verify else []
    return _report_failures(console, failures) if args.verify else 0


def _chunk_table(console: Any, rows: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.table import Table

    t = Table(title="Chunks")
    for col in ("path", "file off", "blob", "compressed off+size", "uncompressed off+size",
                "index", "digest", "flags"):
        t.add_column(col, overflow="fold")
    for path, c in rows:
        t.add_row(path, str(c["file_offset"]), f"{c['blob_index']} {(c['blob_id'] or '?')[:12]}",
                  f"{c['compressed_offset']}+{c['compressed_size']}",
                  f"{c['uncompressed_offset']}+{c['uncompressed_size']}", str(c["index"]),
                  c["digest"][:16], " ".join(c["flags_decoded"]) or "-")
    console.print(t)


def _one_inode(console: Any, image: Image, node: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Inode {node['path']}")
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in node.items():
        if k in ("chunks", "xattrs"):
            continue
        if k == "mode":
            v = f"{_mode_text(v)} ({v})"
        t.add_row(k, str(v))
    for name, value in node["xattrs"].items():
        t.add_row(f"xattr {name}", value)
    console.print(t)
    if node["chunks"]:
        _chunk_table(console, [(node["path"], c) for c in node["chunks"]])


def _report_failures(console: Any, failures: list[dict[str, Any]]) -> int:
    if not failures:
        console.print("[green]verify: every chunk read and matched its digest[/green]")
        return 0
    for f in failures:
        console.print(f"[red]verify failed[/red] {f['path']} @ {f['file_offset']}: {f['error']}",
                      markup=True, highlight=False)
    console.print(f"[red]{len(failures)} chunk(s) failed verification[/red]")
    return len(failures)
