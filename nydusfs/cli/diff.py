"""`nydusfs diff`: paths added, removed and changed between two images, and the update cost."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .args import add_registry_options, registry_options
from .explore import size_text
from .show import console as make_console
from .show import shown

HELP = "show what changed between two images, and what an update costs a node holding the first"
DESCRIPTION = """\
Compare image A with image B path by path, every field as `nydusfs check` compares them
(type, mode, uid, gid, size, content, symlink target, device numbers, nlink, hard links,
xattrs, mtime), and list the paths added, removed and changed with the fields that changed.

A and B: image references (oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE,
docker://HOST/REPO:TAG; OCI or Nydus images), Nydus bootstraps or layer files, OCI layers (a
tar or an untarred directory, taken as a one-layer image), in any mix. Two Nydus images are
compared by chunk digests without reading any blob, and the update cost is shown: per blob
of B, the compressed bytes of the chunk ranges B's files point at, held when A has that blob
and to be fetched otherwise (even a chunk whose digest A has in another blob is fetched from
the blob B names, as a mount does), and, for an image reference, B's bootstrap layer, held when
it is A's. A lazy registry mount fetches these ranges in whole 64 KiB pages with read-ahead:
at least the cost, at most the blobs' sizes (docs/explore.md). Otherwise contents are compared
by blake3 of the bytes (Nydus blobs are read from the image, or from --blob-dir).
"""
EPILOG = """\
Exit status: 0 the images are equal; 1 they differ; 2 bad input.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("diff", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="the old image")
    p.add_argument("b", metavar="B", help="the new image")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--ignore", nargs="+", action="extend", default=[], metavar="FIELD",
                   help="fields not to compare (names as for check --ignore)")
    add_registry_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..check.compare import FIELDS
    from ..errors import UsageError
    from ..explore.diff import diff
    from ..explore.inputs import is_nydus_arg, load_side
    from ..explore.report import diff_doc

    bad = [f for f in args.ignore if f not in FIELDS]
    if bad:
        raise UsageError(f"--ignore: unknown field {bad[0]!r} (one of: {', '.join(FIELDS)})")
    registry = registry_options(args)
    content = "chunks" if is_nydus_arg(args.a, **registry) and is_nydus_arg(args.b, **registry) else "blake3"
    a = load_side(args.a, args.blob_dir, content, **registry)
    b = load_side(args.b, args.blob_dir, content, **registry)
    result = diff(a, b, frozenset(args.ignore))
    doc = diff_doc(result)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print(doc)
    return 0 if result.equal else 1


def _print(doc: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    console = make_console()
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for c in doc["changes"]:
        fields = f"  ({', '.join(c['fields'])})" if c["fields"] else ""
        console.print(Text(f"{marks[c['status']]} {shown(c['path'])}{shown(fields)}"))
    n = doc["counts"]
    console.print(Text("equal" if doc["equal"] else
                       f"{n['added']} added, {n['removed']} removed, {n['changed']} changed"))
    cost = doc.get("update_cost")
    if cost is not None:
        t = Table(title="update cost (compressed chunk bytes of B, and its bootstrap layer)")
        for col in ("blob", "chunks", "bytes", "already held", "to fetch", "digest in A"):
            t.add_column(col, justify="left" if col == "blob" else "right")
        for b in cost["blobs"]:
            t.add_row(Text(shown(b["blob"])), str(b["chunks"]), size_text(b["bytes"]),
                      size_text(b["present_bytes"]), size_text(b["fetch_bytes"]),
                      size_text(b["same_digest_bytes"]))
        boot = cost["bootstrap"]
        if boot is not None:
            t.add_row(Text(shown(boot["layer"])), "bootstrap", size_text(boot["bytes"]),
                      size_text(boot["present_bytes"]), size_text(boot["fetch_bytes"]), "")
        t.add_row("total", "", size_text(cost["bytes"]), size_text(cost["present_bytes"]),
                  size_text(cost["fetch_bytes"]), size_text(cost["same_digest_bytes"]))
        console.print(t)
