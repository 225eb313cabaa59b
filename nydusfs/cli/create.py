"""`nydusfs create`: convert one OCI layer tar into a Nydus layer."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from ..errors import UsageError
from ..format.blob import DEFAULT_CHUNK_SIZE
from ..format.choices import (FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor, Digester, LayerFileLayout,
                              PrefetchPolicy, WhiteoutSpec)
from ..util.output import atomic_output, check_paths
from ..util.show import printable
from ..write.limits import U64_MAX
from .args import MAX_THREADS, integer
from ..util.prefetch import parse_chunk_dict, parse_patterns, read_pattern_source

HELP = "convert one OCI layer tar (tar, tar.gz, tar.zst, or - for stdin) into a Nydus layer"
DESCRIPTION = """\
Convert the OCI tar stream of one image layer into a Nydus layer: a data blob (file contents cut
into compressed, digested chunks) plus a RAFS bootstrap (all metadata). SOURCE is a layer tar,
tar.gz or tar.zst file, or - for stdin; the compression is detected from the bytes.

Outputs (choose one):
  -o OUT                     a Nydus layer file. Layout A (default): a standard tar holding
                             image/image.blob (data at offset 1024; chunk offsets are absolute in
                             OUT) and image/image.boot; its blob holds at most 8 GiB - 1 (a USTAR
                             size). Layout B (--layout B): the current upstream form, each
                             section followed by a tar header, with a ToC for v6.
  --bootstrap F --blob F     separate bootstrap and blob files
  --bootstrap F --blob-dir D the blob is written to D, named by its blob id
Outputs are written whole or not at all (also on Ctrl-C and SIGTERM). An output that is also
another output or an input, that exists as something other than a regular file, or whose
directory does not exist is a usage error; only --blob-dir is made when missing.

Defaults are those of current nydus-image: RAFS v6, zstd, blake3, 1 MiB chunks, whiteout spec
oci. A layer bootstrap keeps its whiteout markers as entries, as upstream's tar build does, so
that `nydusfs merge` applies them to the lower layers (mount and check the merged image, even
for a single layer). --whiteout-spec says what the markers look like in the tar: oci (.wh.NAME,
.wh..wh..opq) and none keep entries as they are; overlayfs turns 0/0 character devices and
directories with trusted.overlay.opaque=y into the OCI markers, so merge sees one convention.
Regular files are deduplicated by chunk digest within the layer and against --chunk-dict.

Values RAFS cannot hold are refused with the member, field, value and limit: uid/gid past
2^32-1, mtime or size past 2^64-1, device major past 4095 or minor past 1048575, NUL bytes in
PAX paths, link targets or xattr names, and (v5) symlink targets past 65535 bytes. Dates
before 1970 are stored as 0, with one warning per layer (nydusfs check applies the same rule).
"""


def register(sub: Any) -> None:
    p = sub.add_parser("create", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="layer tar / tar.gz / tar.zst, or - for stdin")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="OUT", help="write a Nydus layer file")
    out.add_argument("--layout", choices=LayerFileLayout.values(), default=LayerFileLayout.A,
                     help="Nydus layer file layout (default: A, a standard tar)")
    out.add_argument("--bootstrap", metavar="FILE", help="write the bootstrap to FILE")
    out.add_argument("--blob", metavar="FILE", help="write the data blob to FILE")
    out.add_argument("--blob-dir", metavar="DIR", help="write the data blob into DIR, named by its id")
    out.add_argument("--output-json", metavar="FILE",
                     help="write what was built (version, compressor, blob id and size, counts, "
                          "timings) as JSON to FILE (- for stdout)")
    fmt = p.add_argument_group("format")
    fmt.add_argument("--fs-version", type=int, choices=FS_VERSIONS, default=6, help="RAFS version (default: 6)")
    fmt.add_argument("--compressor", choices=Compressor.values(WRITABLE_COMPRESSORS), default=Compressor.ZSTD,
                     help="chunk compression (default: zstd, level 3)")
    fmt.add_argument("--digester", choices=Digester.values(), default=Digester.BLAKE3,
                     help="chunk and inode digest (default: blake3)")
    fmt.add_argument("--chunk-size", type=integer(0x1000, 0x1000000, base0=True), default=DEFAULT_CHUNK_SIZE,
                     help="chunk size, a power of two from 0x1000 to 0x1000000 (default: 0x100000)")
    fmt.add_argument("--aligned-chunk", action="store_true",
                     help="v5: align uncompressed chunk offsets to 4 KiB (v6 always does). v6 with "
                          "--compressor none: also store each chunk at a 4 KiB-aligned blob offset "
                          "equal to its uncompressed offset, so the blob can back a kernel erofs mount")
    fmt.add_argument("--blob-offset", type=integer(0, U64_MAX, base0=True), default=None,
                     help="add N to every chunk's compressed offset, for a blob that will sit at "
                          "offset N of an outer file (layout A uses 1024 by itself)")
    fmt.add_argument("--whiteout-spec", choices=WhiteoutSpec.values(), default=WhiteoutSpec.OCI,
                     help="whiteout convention of the layer (default: oci); see above")
    fmt.add_argument("--chunk-dict", metavar="bootstrap=FILE",
                     help="chunks whose digest is in this bootstrap are not stored again and "
                          "point at the dictionary's blob")
    pf = p.add_argument_group("prefetch")
    pf.add_argument("--prefetch-policy", choices=PrefetchPolicy.values(), default=PrefetchPolicy.NONE,
                    help="fs: prefetch table of the listed paths; blob: blob readahead range over "
                         "their data; none (default)")
    pf.add_argument("--prefetch-files", metavar="FILE",
                    help="prefetch patterns, one absolute path per line (- for stdin; default: "
                         "stdin when a policy is given and SOURCE is not stdin)")
    p.add_argument("--workers", type=integer(1, MAX_THREADS), default=None,
                   help=f"compression/digest threads, 1 to {MAX_THREADS} (default: one per core, "
                        "at most 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no warnings")
    p.set_defaults(run=run)


def _patterns(args: argparse.Namespace, warn: Any) -> list[bytes]:
    if args.prefetch_policy == PrefetchPolicy.NONE:
        return []
    src = args.prefetch_files
    if src is None:
        if args.source == "-":
            raise UsageError("SOURCE is stdin, so prefetch patterns need --prefetch-files FILE")
        src = "-"
    patterns, warnings = parse_patterns(read_pattern_source(src))
    for w in warnings:
        if warn:
            warn(w)
    return patterns


def run(args: argparse.Namespace) -> int:
    from ..create.pipeline import CreateOptions  # heavy: only when creating

    check_paths({"-o": args.output, "--bootstrap": args.bootstrap, "--blob": args.blob,
                 "--output-json": args.output_json},
                {"SOURCE": args.source, "--chunk-dict": parse_chunk_dict(args.chunk_dict),
                 "--prefetch-files": args.prefetch_files})
    warn = None if args.quiet else \
        (lambda m: print(f"nydusfs create: warning: {printable(m)}", file=sys.stderr))
    opts = CreateOptions(
        fs_version=args.fs_version, compressor=args.compressor, digester=args.digester,
        chunk_size=args.chunk_size, whiteout_spec=args.whiteout_spec, blob_offset=args.blob_offset,
        chunk_dict=parse_chunk_dict(args.chunk_dict), prefetch_policy=args.prefetch_policy,
        prefetch_patterns=_patterns(args, warn), aligned_chunk=args.aligned_chunk, layout=args.layout,
        output=args.output, bootstrap=args.bootstrap, blob=args.blob, blob_dir=args.blob_dir,
        workers=args.workers)
    # the report's temporary file is made before the work, so a path the system refuses (under
    # /proc, say) fails before the layer is written; it is renamed into place at the end
    report = atomic_output(args.output_json, "--output-json", text=True) \
        if args.output_json and args.output_json != "-" else contextlib.nullcontext(sys.stdout)
    with report as out:
        result = _create(args, opts, warn)
        if args.output_json:
            out.write(json.dumps(result.as_json(), indent=2) + "\n")
    return 0


def _create(args: argparse.Namespace, opts: Any, warn: Any) -> Any:
    from ..create.pipeline import create

    show_progress = not args.quiet and sys.stderr.isatty()
    if show_progress:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        with Progress(TextColumn("create"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task("create", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            result = create(args.source, opts, progress, warn)
    else:
        result = create(args.source, opts, None, warn)
    return result
