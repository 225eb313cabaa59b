"""`nydusfs dump`: the bootstrap's tables as rich tables (people) or JSON (machines)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from typing import IO, Any

from .. import dump as model
from ..errors import NydusfsError, UsageError
from ..reader import Image
from ..util.output import atomic_output, check_paths
from ..util.show import printable
from . import boxtable
from .args import add_platform, add_registry_options, registry_options

HELP = "show a bootstrap's superblock, blob, prefetch, inode, xattr and chunk tables"
DESCRIPTION = """\
Show everything a RAFS v5/v6 bootstrap holds: the superblock (every field, flags decoded), the
blob table (v5 blob + extended blob table, v6 blob table + device slots), the prefetch table,
every inode (path, inode number, type, mode, uid, gid, size, nlink, mtime with nanoseconds,
rdev, symlink target, xattrs, chunk count) and the chunks of each regular file.

BOOTSTRAP may be a bare bootstrap or a Nydus layer file (layout A or B); the bootstrap is found
inside it. It may also be a Nydus image reference (oci:DIR[:REF], oci-archive:FILE[:REF],
docker-archive:FILE[:REF], docker://HOST/REPO[:TAG|@DIGEST]): the bootstrap layer is extracted
once into the cache ($NYDUSFS_CACHE_DIR, else $XDG_CACHE_HOME/nydusfs, else ~/.cache/nydusfs)
and blobs are read in place from the image (from a registry: only the bootstrap layer is
fetched, and blobs only for --verify).
Inode numbers are RAFS v5 inode numbers, or RAFS v6 nids (what the kernel shows).
With --json the output is one JSON object; docs/dump.md documents its schema. In the tables
everything from the image is escaped for the terminal (control characters as \\xNN or \\uNNNN,
undecodable bytes as \\xNN); JSON keeps exact values.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("dump", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", metavar="BOOTSTRAP", help="bootstrap, Nydus layer file or Nydus image reference")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable); needed by --verify")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write to FILE instead of stdout (whole, or not at all on an error)")
    p.add_argument("--path", metavar="P", help="show only the inode at absolute path P, in full")
    p.add_argument("--no-chunks", action="store_true", help="leave out the per-file chunk tables")
    p.add_argument("--verify", action="store_true",
                   help="read every chunk through the blobs and check it against its own digest, and "
                   "the chunk records against the format and each other; exit 1 on failures")
    add_platform(p, "with an image reference: the Nydus image of this platform from an index")
    add_registry_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..image.nydus import open_any
    from .args import platform_for

    platform = platform_for(args.bootstrap, args.platform)
    check_paths([("--output", args.output)],
                [("BOOTSTRAP", args.bootstrap)] + [("--blob-dir", d) for d in args.blob_dir])
    to_file: contextlib.AbstractContextManager[IO[Any]] = \
        atomic_output(args.output, "--output", text=True) if args.output else contextlib.nullcontext(sys.stdout)
    with open_any(args.bootstrap, args.blob_dir, platform=platform, **registry_options(args)) as image, \
            to_file as out:
        try:
            if args.json:
                failures = _json(image, args, out)
            else:
                failures = _tables(image, args, out)
            out.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            if e.filename is not None or isinstance(e, NydusfsError) or args.output:
                raise
            # what fails without a file name here is standard output (a full disk, /dev/full)
            raise UsageError(f"standard output: {e.strerror or e}") from None
    return 1 if failures else 0


# --- JSON ------------------------------------------------------------------------------------

def _json(image: Image, args: argparse.Namespace, out: IO[str]) -> int:
    if args.path:
        ino = image.resolve(args.path)
        doc: dict[str, Any] = model.inode(image, os.fsencode(args.path), ino, args.verify)
        failures = 0
        if args.verify:
            bad = list(model.verify(image, (os.fsencode(args.path), ino)))
            doc["verify"] = {"failures": bad}
            failures = len(bad)
        json.dump(doc, out, indent=1)
        out.write("\n")
        return failures
    head = model.header(image)
    text = json.dumps(head, indent=1)
    out.write(text[:-2] + ',\n "inodes": [')  # stream the inodes into the same object
    first = True
    for node in model.inodes(image, args.verify):
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
# Every string that comes from the image goes into a cell as a rich Text, never as markup (a
# name like "[/x]" would otherwise be parsed, and rejected, as a closing tag), and through
# `printable`, so control sequences in names reach the terminal as escapes.

def _mode_text(mode: int) -> str:
    return f"{stat.filemode(mode)} {stat.S_IMODE(mode):04o}"




def _t(value: Any) -> Any:
    from rich.text import Text

    return Text(printable(value))


def _number(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} (0x{value:x})" if value > 9 else str(value)
    if isinstance(value, list):
        return " | ".join(value) or "-"
    return str(value)


def _tables(image: Image, args: argparse.Namespace, out: IO[str]) -> int:
    from rich.console import Console

    # a terminal's width when there is one; wide rows for files and pipes (unless COLUMNS says)
    wide = not out.isatty() and "COLUMNS" not in os.environ
    console = Console(file=out, width=200 if wide else None)
    if args.path:
        ino = image.resolve(args.path)
        _one_inode(console, model.inode(image, os.fsencode(args.path), ino, args.verify))
        if not args.verify:
            return 0
        return _report_failures(console, list(model.verify(image, (os.fsencode(args.path), ino))))

    head = model.header(image)
    _superblock_table(console, image, head)
    _blob_tables(console, head)
    _prefetch_table(console, head)
    count = _inode_tables(console, image, args)
    console.print(_t(f"{count} inodes"))
    return _report_failures(console, list(model.verify(image))) if args.verify else 0


def _table(title: str | None, columns: tuple[str, ...], **kw: Any) -> Any:
    from rich.table import Table

    t = Table(title=_t(title) if title else None, **kw)
    for col in columns:
        # keep whole ids and digests on one line when the width allows it
        t.add_column(col, overflow="fold", min_width=64 if col == "blob id" else None)
    return t


def _superblock_table(console: Any, image: Image, head: dict[str, Any]) -> None:
    t = _table(f"Superblock: RAFS v{image.version} ({head['layout']})", ("field", "value"))
    for k, v in head["superblock"].items():
        t.add_row(k, _t(v if k == "inode_count" else _number(v)))
    console.print(t)


def _blob_tables(console: Any, head: dict[str, Any]) -> None:
    t = _table(f"Blobs ({len(head['blobs'])})", ("#", "blob id", "compressor", "digester", "chunks",
                                                  "compressed", "uncompressed", "features",
                                                  "readahead", "file"))
    for b in head["blobs"]:
        blob_id = b["blob_id"] + ("" if b["raw_id"] == b["blob_id"] else f"\n(stored {b['raw_id']})")
        t.add_row(str(b["index"]), _t(blob_id), b["compressor"], b["digester"], str(b["chunk_count"]),
                  str(b["compressed_size"]), str(b["uncompressed_size"]),
                  " ".join(b["features_decoded"]) or "-",
                  f"{b['readahead_offset']}+{b['readahead_size']}", _t(b.get("file") or "-"))
    console.print(t)
    v6 = [b for b in head["blobs"] if "ci_offset" in b]
    if v6:
        t = _table("Blob table (RAFS v6) and device slots", (
            "#", "ci compressor", "ci offset", "ci compressed", "ci uncompressed", "toc size",
            "toc digest", "meta digest", "cipher", "device blocks", "mapped blkaddr"))
        for b in v6:
            dev = b.get("device") or {}
            t.add_row(str(b["index"]), str(b["ci_compressor"]), str(b["ci_offset"]),
                      str(b["ci_compressed_size"]), str(b["ci_uncompressed_size"]),
                      str(b["blob_toc_size"]), b["blob_toc_digest"][:16], b["blob_meta_digest"][:16],
                      str(b["cipher_algo"]), str(dev.get("blocks", "-")),
                      str(dev.get("mapped_blkaddr", "-")))
        console.print(t)


def _prefetch_table(console: Any, head: dict[str, Any]) -> None:
    t = _table(f"Prefetch table ({len(head['prefetch'])})", ("ino", "path"))
    for e in head["prefetch"]:
        t.add_row(str(e["ino"]), _t(e["path"] or "?"))
    console.print(t)


INODE_COLUMNS = ("path", "ino", "type", "mode", "uid", "gid", "size", "nlink", "mtime", "rdev",
                 "symlink", "xattrs", "chunks")


def _inode_tables(console: Any, image: Image, args: argparse.Namespace) -> int:
    """The inode and chunk tables, 500 rows at a time (boxtable: rich would take ~1 ms a row)."""
    rows: list[list[str]] = []
    chunk_rows: list[tuple[str, dict[str, Any]]] = []
    count = 0
    for node in model.inodes(image, args.verify):
        rdev = f"{os.major(node['rdev'])}:{os.minor(node['rdev'])}" if node["rdev"] else ""
        rows.append([printable(node["path"]), str(node["ino"]),
                     node["type"] + (" (implied)" if node["implicit"] else ""),
                     _mode_text(node["mode"]), str(node["uid"]), str(node["gid"]),
                     str(node["size"]), str(node["nlink"]),
                     f"{node['mtime']}.{node['mtime_nsec']:09d}", rdev,
                     printable(node["symlink"] or ""), printable(" ".join(node["xattrs"])),
                     str(len(node["chunks"]))])
        if not args.no_chunks:
            chunk_rows.extend((node["path"], c) for c in node["chunks"])
        count += 1
        if len(rows) == SLICE:
            _print_rows(console, "Inodes" if count == SLICE else None, INODE_COLUMNS, rows,
                        INODE_FOLDED, header=count == SLICE)
            rows = []
        if len(chunk_rows) >= SLICE:
            _chunk_table(console, chunk_rows)
            chunk_rows = []
    if rows:
        _print_rows(console, "Inodes" if count <= SLICE else None, INODE_COLUMNS, rows,
                    INODE_FOLDED, header=count <= SLICE)
    if chunk_rows:
        _chunk_table(console, chunk_rows)
    return count


SLICE = 500                     # rows per table: columns fit the rows around them
INODE_FOLDED = (0, 10, 11)      # path, symlink, xattrs: folded when the width is short
CHUNK_COLUMNS = ("path", "file off", "blob", "compressed off+size", "uncompressed off+size",
                 "index", "digest", "flags")
CHUNK_FOLDED = (0, 6)           # path, digest


def _print_rows(console: Any, title: str | None, columns: tuple[str, ...],
                rows: list[list[str]], flexible: tuple[int, ...], header: bool = True) -> None:
    ascii_only = not (console.encoding or "").lower().startswith("utf")
    console.file.write(boxtable.render(title, columns, rows, width=console.width,
                                       flexible=flexible, header=header,
                                       ascii_only=ascii_only))


def _chunk_table(console: Any, rows: list[tuple[str, dict[str, Any]]]) -> None:
    _print_rows(console, "Chunks", CHUNK_COLUMNS, [
        [printable(path), str(c["file_offset"]),
         printable(f"{c['blob_index']} {(c['blob_id'] or '?')[:12]}"),
         f"{c['compressed_offset']}+{c['compressed_size']}",
         f"{c['uncompressed_offset']}+{c['uncompressed_size']}", str(c["index"]),
         c["digest"], " ".join(c["flags_decoded"]) or "-"] for path, c in rows], CHUNK_FOLDED)


def _one_inode(console: Any, node: dict[str, Any]) -> None:
    t = _table(f"Inode {node['path']}", ("field", "value"))
    for k, v in node.items():
        if k in ("chunks", "xattrs"):
            continue
        t.add_row(k, _t(f"{_mode_text(v)} ({v})" if k == "mode" else v))
    for name, value in node["xattrs"].items():
        t.add_row(_t(f"xattr {name}"), _t(value))
    console.print(t)
    if node["chunks"]:
        _chunk_table(console, [(node["path"], c) for c in node["chunks"]])


def _report_failures(console: Any, failures: list[dict[str, Any]]) -> int:
    from rich.text import Text

    if not failures:
        console.print(Text("verify: every chunk read and matched its digest; the chunk records "
                           "agree with the format and each other", style="green"))
        return 0
    for f in failures:
        line = Text("verify failed ", style="red")
        where = f["path"] or "(image)"
        if f["file_offset"] is not None:
            where += f" @ {f['file_offset']}"
        line.append(printable(f"{where}: {f['error']}"))
        console.print(line, highlight=False)
    console.print(Text(f"{len(failures)} verification failure(s)", style="red"))
    return len(failures)
