"""`nydusfs unpack`: the merged tree of a bootstrap as one OCI layer tar."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import UsageError
from .args import add_platform, add_registry_options, platform_for, registry_options

HELP = "write the tree of a bootstrap (with its blobs) as one OCI layer tar"
DESCRIPTION = """\
Write the whole tree that BOOTSTRAP describes - for a merged bootstrap the image's final tree -
as one OCI layer tar (POSIX pax format) to OUT, or to standard output with `-o -`. Any tool that
reads layer tars (tar, umoci, diffoscope, a registry) can then use a Nydus image.

The tar holds every entry with its mode (setuid, setgid, sticky included), numeric uid and gid
(user and group names empty), mtime to the nanosecond (a pax `mtime` record when it is not a
whole second), xattrs as `SCHILY.xattr.NAME` records (bytes), hard links as link entries to the
first name, symlinks, character and block devices, fifos, and the root directory as `./`.
Names are bytes as stored in the image (a pax `path` record, with `hdrcharset=BINARY` when they
are not UTF-8). Sockets cannot be stored in a tar: they are left out and listed on stderr.

File data is read through the blobs found in the --blob-dir directories (a Nydus layer file
holds its own blob), or, for a Nydus image reference (oci:DIR[:TAG], oci-archive:FILE[:TAG],
docker-archive:FILE[:TAG], docker://HOST/REPO[:TAG|@DIGEST]), from the image itself, and every
chunk is checked against its digest before it is written. The output is deterministic: the same
image gives the same bytes (entries in depth-first order, children sorted by name bytes).
A file OUT appears only when
complete (temp file + rename); on any error nothing is left behind and an existing OUT is
unchanged.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("unpack", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", metavar="BOOTSTRAP",
                   help="bootstrap, Nydus layer file or Nydus image reference (oci:DIR[:TAG], ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the tar file to write, or - for standard output")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable)")
    add_platform(p, "with an image reference: the Nydus image of this platform from an index")
    add_registry_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..image.nydus import open_any
    from ..unpack import show, unpack
    from ..unpack.output import output
    from ..util.output import check_paths

    for d in args.blob_dir:
        if not os.path.isdir(d):
            raise UsageError(f"--blob-dir {d}: not a directory")
    platform = platform_for(args.bootstrap, args.platform)
    check_paths([("-o", args.output)], [("BOOTSTRAP", args.bootstrap)] + [("--blob-dir", d) for d in args.blob_dir])
    if args.output == "-" and sys.stdout.isatty():
        raise UsageError("-o -: standard output is a terminal; redirect it or give a file name")
    with open_any(args.bootstrap, args.blob_dir, platform=platform, **registry_options(args)) as image, \
            output(args.output) as out:
        stats = unpack(image, out)
    for path in stats.sockets_skipped:
        print(f"nydusfs unpack: {show(path)}: socket left out (tar has no socket type)", file=sys.stderr)
    return 0
