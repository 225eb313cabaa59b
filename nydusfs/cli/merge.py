"""`nydusfs merge`: per-layer bootstraps into the image bootstrap a runtime mounts directly."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..format.choices import PrefetchPolicy, WhiteoutSpec
from ..util.show import printable


HELP = "merge per-layer bootstraps (lowest first) into one image bootstrap"
DESCRIPTION = """\
Merge the bootstraps of an image's Nydus layers, lowest layer first, into one bootstrap that
a runtime mounts without overlayfs. OCI whiteouts are applied: `.wh.NAME` hides the lower
NAME and its subtree, `.wh..wh..opq` hides every lower entry of its directory; markers only
act on lower layers and never appear in the result (also not from the lowest layer). A
directory over a directory merges the two and takes the upper attributes, unless the upper
layer only implied it; any other type change replaces the entry. `nydusfs create` keeps the
markers in each layer's bootstrap for this.

Each SOURCE is a Nydus layer file (either layout) or a bare bootstrap. All sources must share
the RAFS version (the output has the same), chunk size and explicit uid/gid; RAFS v5 sources
must also share digester and compressor.

Blob ids: a layer's own blob is listed under --blob-digests[i], else --original-blob-ids[i],
else the SOURCE file's name up to its first dot (name layer files after their digest, and
their directory serves as the blob directory of the merged image). Blobs no longer referenced
are dropped; the table lists blobs in the order the merged tree first uses them.
"""
EPILOG = """\
examples:
  nydusfs merge --bootstrap image.boot layers/<digest0> layers/<digest1> layers/<digest2>
  echo / | nydusfs merge --prefetch-policy fs --bootstrap image.boot L0.boot L1.boot
"""


def register(sub: Any) -> None:
    p = sub.add_parser("merge", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", metavar="SOURCE", nargs="+",
                   help="Nydus layer file or bootstrap, lowest layer first")
    p.add_argument("--bootstrap", required=True, metavar="OUT",
                   help="where to write the merged bootstrap (written whole or not at all; not one "
                        "of the inputs)")
    p.add_argument("--parent-bootstrap", metavar="FILE",
                   help="an already merged image to put the sources on top of; its tree and "
                        "blobs come first (default: none)")
    p.add_argument("--chunk-dict", metavar="bootstrap=FILE",
                   help="the chunk dict the layers were built with: its blobs may be referenced "
                        "by any layer besides the layer's own blob (default: none)")
    p.add_argument("--prefetch-policy", choices=PrefetchPolicy.values(), default=PrefetchPolicy.NONE,
                   help="fs: build the prefetch table from the patterns; blob and none keep "
                        "only the blobs' readahead ranges as the layers stored them "
                        "(default: %(default)s)")
    p.add_argument("--prefetch-files", metavar="FILE", default="-",
                   help="absolute paths to prefetch, one per line, `/` for the whole image; read "
                        "with --prefetch-policy fs (default: stdin)")
    p.add_argument("--whiteout-spec", choices=WhiteoutSpec.values(), default=WhiteoutSpec.OCI,
                   help="whiteout markers of the sources: oci (.wh. names; what create writes, "
                        "also for overlayfs input), overlayfs (0/0 character devices and "
                        "trusted.overlay.opaque=y directories, as in bootstraps built from "
                        "overlayfs upper directories), none (layers simply overlaid) "
                        "(default: %(default)s)")
    p.add_argument("--blob-digests", metavar="D1,D2,...",
                   help="per source: sha256 (hex) to use as the id of the layer's own blob")
    p.add_argument("--original-blob-ids", metavar="ID1,ID2,...",
                   help="per source: id of the layer's own blob (default: the file-name stem)")
    p.add_argument("--blob-sizes", metavar="S1,S2,...",
                   help="per source: compressed size of the layer's own blob")
    p.add_argument("--blob-toc-digests", metavar="D1,D2,...",
                   help="per source: sha256 (hex) of the own blob's ToC (RAFS v6 blob table)")
    p.add_argument("--blob-toc-sizes", metavar="S1,S2,...",
                   help="per source: size of the own blob's ToC (RAFS v6 blob table)")
    p.add_argument("--keep-blob-ids", action="store_true",
                   help="list own blobs under the ids the sources store (for bootstraps whose "
                        "blobs sit in a blob directory under those ids) instead of file-name stems")
    p.add_argument("--output-json", metavar="FILE",
                   help="write what was merged: versions, compressor, final blob table in order, "
                        "inode count, warnings, timings")
    p.set_defaults(run=run)


def options_from(args: argparse.Namespace, stdin: Any = None) -> Any:
    from ..merge.options import MergeOptions, split_list, split_sizes
    from ..util.prefetch import parse_chunk_dict, parse_patterns, read_pattern_source

    opts = MergeOptions(
        parent_bootstrap=args.parent_bootstrap, chunk_dict=parse_chunk_dict(args.chunk_dict),
        prefetch_policy=args.prefetch_policy, whiteout_spec=args.whiteout_spec,
        blob_digests=split_list("--blob-digests", args.blob_digests),
        original_blob_ids=split_list("--original-blob-ids", args.original_blob_ids),
        blob_sizes=split_sizes("--blob-sizes", args.blob_sizes),
        blob_toc_digests=split_list("--blob-toc-digests", args.blob_toc_digests),
        blob_toc_sizes=split_sizes("--blob-toc-sizes", args.blob_toc_sizes),
        keep_blob_ids=args.keep_blob_ids)
    opts.validate(args.sources)
    warnings: list[str] = []
    if args.prefetch_policy == PrefetchPolicy.FS:
        opts.prefetch_patterns, warnings = parse_patterns(read_pattern_source(args.prefetch_files, stdin))
    return opts, warnings


def run(args: argparse.Namespace) -> int:
    from ..merge import merge
    from ..util.output import check_paths, write_outputs

    opts, warnings = options_from(args)
    check_paths({"--bootstrap": args.bootstrap, "--output-json": args.output_json},
                {**{f"SOURCE {i + 1}": s for i, s in enumerate(args.sources)},
                 "--parent-bootstrap": opts.parent_bootstrap, "--chunk-dict": opts.chunk_dict,
                 "--prefetch-files": args.prefetch_files if args.prefetch_policy == PrefetchPolicy.FS else None})
    result = merge(args.sources, opts)
    result.warnings[:0] = warnings
    data = result.bootstrap()
    files = [(args.bootstrap, data)]
    if args.output_json:
        doc = result.summary(args.bootstrap)
        files.append((args.output_json, (json.dumps(doc, indent=2) + "\n").encode()))
    write_outputs(files)
    for w in result.warnings:
        print(f"nydusfs merge: warning: {printable(w)}", file=sys.stderr)
    return 0
