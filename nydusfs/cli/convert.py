"""`nydusfs convert`: an OCI/Docker image into a Nydus image, as nydusify writes it."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ..format.choices import FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor
from .args import add_platform, add_registry_options, registry_options

HELP = "convert an OCI/Docker image into a Nydus image (as nydusify convert writes it)"
DESCRIPTION = """\
Convert the image SRC into a Nydus image written to DST. Image references use skopeo's
syntax: oci:DIR[:REF] (an OCI image layout; REF is its ref.name or a digest, and may be left
out when the layout holds one image), oci-archive:FILE[:REF], docker-archive:FILE[:REF]
(`docker save` output; REF is REPO:TAG or @N), and docker://HOST/REPO[:TAG|@DIGEST] (a
registry; docs/registry.md). DST is oci:DIR[:TAG] (blobs the layout already holds are shared),
oci-archive:FILE[:TAG] or docker://HOST/REPO:TAG; it changes only when the whole conversion
succeeded.

Each source layer is streamed (never untarred to disk) through `create` with nydusify's
defaults: RAFS v6, zstd, 1 MiB chunks, a blob with inline meta and ToC, whiteout markers kept,
prefetch policy fs with the patterns given (default `/`). The blob is named by its sha256, so
the blob id in the bootstrap is the layer digest. The layers' bootstraps are merged, and the
image is written as the spec of the Nydus image layout says: one blob layer per source layer
(data-less ones too), the bootstrap layer last (gzip tar of image/image.boot and, for v6, each
blob's image/<digest>.blob.meta), the config with new diff_ids and one history entry (every
other field kept), the manifest with nydusify's annotations. The same source converts to the
same manifest digest.

Layers are converted in parallel (-j) and kept in a layer cache keyed by the source layer
digest and the options, so a new version of an image converts only the layers it changed.
"""
EPILOG = """\
examples:
  nydusfs convert oci:app:v1 oci:app:v1-nydus
  nydusfs convert docker-archive:app.tar oci-archive:app-nydus.tar --fs-version 5
  nydusfs convert oci:multi:latest oci:out:latest --all-platforms
  nydusfs convert docker://reg.example/app:v1 docker://reg.example/app:v1-nydus \\
      --src-creds reader --dest-authfile push-auth.json
Exit status: 0 converted; 2 bad input (reference, layout, manifest, layer), DST untouched.
"""


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def register(sub: Any) -> None:
    p = sub.add_parser("convert", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="source image reference, e.g. oci:DIR:TAG")
    p.add_argument("dst", metavar="DST",
                   help="target: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker://HOST/REPO:TAG")
    p.add_argument("--fs-version", type=int, choices=FS_VERSIONS, default=6, help="RAFS version (default: 6)")
    p.add_argument("--compressor", choices=Compressor.values(WRITABLE_COMPRESSORS), default=Compressor.ZSTD,
                   help="chunk compression (default: zstd)")
    p.add_argument("--chunk-size", type=_int, default=0x100000, metavar="N",
                   help="chunk size, a power of two from 0x1000 to 0x1000000 (default: 0x100000)")
    p.add_argument("--chunk-dict", metavar="REF|BOOTSTRAP",
                   help="a Nydus image (reference) or bootstrap=FILE whose chunks are reused; the "
                        "dict blobs used are appended to the manifest (default: none)")
    p.add_argument("--prefetch-patterns", metavar="FILE",
                   help="absolute paths to prefetch, one per line (- for stdin; default: `/`)")
    p.add_argument("--oci", action="store_true",
                   help="write OCI media types even for a Docker source (default: keep the source's)")
    p.add_argument("--merge-platform", action="store_true",
                   help="write an index holding the source manifests and the Nydus ones (marked "
                        "with artifactType); every platform unless --platform is given")
    plat = p.add_mutually_exclusive_group()
    add_platform(plat)
    plat.add_argument("--all-platforms", action="store_true",
                      help="convert every image of an index; DST becomes an index")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N",
                   help="layers converted at once (default: 0 = the CPU count)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="layer cache (default: convert/ in $NYDUSFS_CACHE_DIR, else in "
                   "$XDG_CACHE_HOME/nydusfs, else in ~/.cache/nydusfs)")
    p.add_argument("--no-cache", action="store_true",
                   help="convert every layer even if the cache holds it")
    p.add_argument("--output-json", metavar="FILE",
                   help="write the result (digests, per-layer sizes, entries, seconds) as JSON (- for stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    add_registry_options(p, sides=True)
    p.set_defaults(run=run)


def options(args: argparse.Namespace) -> Any:
    from ..convert import ConvertOptions
    from ..util.prefetch import parse_patterns, read_pattern_source

    patterns = [b"/"]
    if args.prefetch_patterns:
        patterns, warnings = parse_patterns(read_pattern_source(args.prefetch_patterns))
        for w in warnings:
            print(f"nydusfs convert: warning: {w}", file=sys.stderr)
    return ConvertOptions(
        fs_version=args.fs_version, compressor=args.compressor, chunk_size=args.chunk_size,
        chunk_dict=args.chunk_dict, prefetch_patterns=patterns, oci=args.oci,
        merge_platform=args.merge_platform,
        platform=args.platform, all_platforms=args.all_platforms, jobs=args.jobs,
        cache_dir=args.cache_dir, use_cache=not args.no_cache,
        source_options=registry_options(args, "src"), target_options=registry_options(args, "dest"))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..convert import convert
    from ..util.output import atomic_output, check_paths

    opts = options(args)
    to_stdout = args.output_json == "-"
    err = Console(stderr=True, highlight=False)
    out = Console(stderr=to_stdout, highlight=False)
    check_paths([("--output-json", args.output_json)])  # before the work, not after it
    if err.is_terminal and not args.no_progress:
        with _RichProgress(err) as progress:
            result = convert(args.src, args.dst, opts, progress)
    else:
        result = convert(args.src, args.dst, opts)
    summary(out, result)
    if args.output_json:
        text = json.dumps(result.as_json(), indent=1) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            with atomic_output(args.output_json, "--output-json", text=True) as f:
                f.write(text)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def summary(console: Any, result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    for img in result.images:
        table = Table(title=escape(f"{result.target} {img.platform}".strip()))
        for col, justify in (("layer", "left"), ("source size", "right"), ("Nydus size", "right"),
                             ("entries", "right"), ("seconds", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for r in img.layers:
            table.add_row(r.source.digest[:19], _size(r.source.size), _size(r.size), str(r.entries),
                          "cached" if r.cached else f"{r.seconds:.2f}")
        console.print(table)
        console.print(f"manifest {img.manifest_digest}, bootstrap {img.bootstrap_digest[:19]}, "
                      f"{img.inode_count} inodes", soft_wrap=True)
    console.print(f"[green]converted[/green] {escape(result.source)} -> {escape(result.target)}: "
                  f"{result.digest} ({result.converted} layers converted, {result.reused} from the "
                  f"cache, {result.seconds:.2f}s)", soft_wrap=True)


class _RichProgress:
    """One bar per layer (source bytes read), plus a line for the current phase. Transient."""

    def __init__(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeElapsedColumn(), console=console,
                                 transient=True)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def layer_start(self, digest: str, total: int) -> None:
        with self.lock:
            self.tasks[digest] = self.progress.add_task(f"layer {digest[7:19]}", total=total)

    def layer_advance(self, digest: str, n: int) -> None:
        self.progress.update(self.tasks[digest], advance=n)

    def layer_done(self, result: Any) -> None:
        task = self.tasks.get(result.source.digest)
        if task is not None:
            what = "cached" if result.cached else f"-> {_size(result.size)}"
            self.progress.update(task, completed=result.source.size,
                                 description=f"layer {result.source.digest[7:19]} {what}")

    def phase(self, text: str) -> None:
        self.progress.console.log(text)

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
