"""`nydusfs check`: compare an image with its OCI layers; rich report for people, JSON for tools."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import threading
from typing import Any

from ..check import CheckOptions, CheckResult, run_check
from ..check.compare import FIELDS, Difference, show_path
from ..errors import UsageError
from ..util.output import Outputs, check_paths
from ..util.show import printable
from .args import MAX_THREADS, add_platform, add_registry_options, integer

HELP = "prove that an image holds exactly what its OCI layers hold; report every difference"
DESCRIPTION = """\
Compare a Nydus image (bootstrap + blobs) with the OCI layers it was converted from. The layers
(LAYER: tar, tar.gz or tar.zst, detected from the bytes, or a directory holding an untarred
layer; lowest first) are applied in memory with the OCI image-spec rules (whiteouts, opaque
directories, hard links...), independently of nydusfs merge, and every path is compared:
presence, type, mode (with setuid/setgid/sticky), uid, gid, size, content digest, symlink
target, device numbers, nlink, hard-link groups, xattrs (bytes) and mtime. Every chunk read is
checked against its own digest, and the chunk records against the format and each other
(`chunks` differences: chunks that do not tile their file, overlap, or contradict the blob
table). A layer that is not a well-formed tar is refused, as create refuses it.

By default the image is read through nydusfs's reader; --through-mount mounts it with nydusfs's
FUSE filesystem and compares what the kernel shows; --mounted DIR compares any mounted tree
(then BOOTSTRAP may be left out). --manifest checks that every blob of the bootstrap is a layer
of the OCI image manifest.

With image references instead (oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
docker://HOST/REPO[:TAG|@DIGEST]):
`check SRC NYDUS` runs the manifest, bootstrap, config and filesystem rules (the filesystem
rule as above, on the images' layers), `check NYDUS` the manifest and bootstrap rules and a
digest check of every chunk; each rule is reported by name (docs/image.md).

{fields}
security.selinux is ignored whenever a side is read from a host filesystem (a mount or an
untarred layer directory), because hosts add it on their own.
""".format(fields=textwrap.fill("FIELD names for --ignore: " + ", ".join(FIELDS)
                                + "; xattr:NAME ignores one extended attribute.", 95))

EPILOG = """\
Exit status: 0 the image holds exactly what the layers hold; 1 differences were found (all are
reported); 2 the check could not be made (bad or unreadable input, mount failure).
See docs/check.md for the OCI rules applied and the choices where the spec is silent.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("check", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bootstrap", metavar="BOOTSTRAP | [SRC] NYDUS", nargs="*",
                   help="bootstrap or Nydus layer file (optional with --mounted); or image "
                        "references: the source image and the Nydus image, or the Nydus image alone")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="OCI layer tar/tar.gz/tar.zst files or untarred layer directories, lowest "
                        "first (needed with a BOOTSTRAP)")
    add_platform(p, "with image references: the image of this platform")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable; default: none)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--through-mount", action="store_true",
                     help="mount the image with nydusfs mount (FUSE) and compare what the kernel "
                          "shows (default: read the image directly)")
    src.add_argument("--mounted", metavar="DIR",
                     help="compare this already mounted (or any) directory tree instead of the image")
    p.add_argument("--json", metavar="FILE", dest="json_out",
                   help="write every difference as JSON to FILE, whole once the check is made (- for "
                        "stdout; the table then goes to stderr)")
    p.add_argument("--ignore", nargs="+", action="extend", default=[], metavar="FIELD",
                   help="fields not to compare (default: none besides host-added xattrs)")
    p.add_argument("--mtime-precision", choices=("s", "us", "ns"), default=None,
                   help="compare mtimes at this precision (default: the finest the image keeps: "
                        "ns, none for compact RAFS v6 inodes)")
    p.add_argument("--no-content", action="store_true",
                   help="compare metadata only; do not read file contents (default: read them all)")
    p.add_argument("--manifest", metavar="FILE",
                   help="OCI image manifest (JSON): every blob of the bootstrap must be one of its layers")
    p.add_argument("--workers", type=integer(0, MAX_THREADS), default=0, metavar="N",
                   help=f"threads hashing contents, up to {MAX_THREADS} (default: 0 = twice the "
                        "CPUs, at most 8)")
    p.add_argument("--examples", type=integer(0), default=5, metavar="N",
                   help="examples shown per kind of difference in the table (default: 5)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is shown only when stderr is a terminal anyway)")
    add_registry_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..image.reference import looks_like_reference

    if any(looks_like_reference(a) for a in args.bootstrap):
        from .check_image import run_image

        return run_image(args)
    if len(args.bootstrap) > 1:
        raise UsageError("give one BOOTSTRAP (two arguments are image references: SRC NYDUS)")
    args.bootstrap = args.bootstrap[0] if args.bootstrap else None
    if not args.layers:
        raise UsageError("--layers is needed with a BOOTSTRAP (or give image references: check SRC NYDUS)")
    opts = CheckOptions(bootstrap=args.bootstrap, layers=args.layers, blob_dirs=args.blob_dir,
                        through_mount=args.through_mount, mounted=args.mounted, ignore=args.ignore,
                        mtime_precision=args.mtime_precision, content=not args.no_content,
                        manifest=args.manifest, workers=args.workers)
    from rich.console import Console

    to_stdout = args.json_out == "-"
    check_paths([("--json", args.json_out)],
                [("BOOTSTRAP", args.bootstrap), ("--manifest", args.manifest), ("--mounted", args.mounted)]
                + [("--layers", p) for p in args.layers] + [("--blob-dir", d) for d in args.blob_dir])
    console = Console(stderr=to_stdout, highlight=False)
    err = Console(stderr=True)
    with Outputs() as outputs:  # the report is written whole once the check is made, or not at all
        json_file = outputs.open(args.json_out, "--json", text=True) if args.json_out and not to_stdout \
            else sys.stdout
        if err.is_terminal and not args.no_progress:
            with _RichProgress(err) as progress:
                result = run_check(opts, progress)
        else:
            result = run_check(opts)
        if args.json_out:
            json.dump(result.to_json(opts), json_file, indent=1)
            json_file.write("\n")
    render(console, result, args.examples)
    return 0 if result.equal else 1


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "[" + ", ".join(map(printable, v)) + "]"
    return printable(v)


def _where(d: Difference) -> str:
    if not d.path:
        return "(blob table)"
    text = printable(show_path(d.path))
    if d.xattr is not None:
        text += f" [{printable(d.xattr)}]"
    return text


TARGETS = {"image": "image", "mount": "mounted image", "mounted": "mounted tree"}


def render(console: Any, result: CheckResult, examples: int = 5) -> None:
    from rich.markup import escape
    from rich.table import Table

    target = TARGETS.get(result.target, result.target)
    stats = (f"{result.expected_paths} paths expected, {result.found_paths} found, "
             f"{result.files_hashed} files ({result.bytes_hashed} bytes) hashed, "
             f"{result.seconds:.2f}s")
    if result.equal:
        console.print(f"[green]equal[/green]: the {target} holds exactly what the layers "
                      f"hold ({escape(stats)})")
        if result.ignored:
            console.print(f"not compared: {escape(', '.join(result.ignored))}")
        return
    groups: dict[str, list[Difference]] = {}
    for d in result.differences:
        groups.setdefault(d.field, []).append(d)
    table = Table(title=f"Differences between the layers and the {target}")
    table.add_column("kind")
    table.add_column("count", justify="right")
    table.add_column("examples: path  expected -> found", overflow="fold")
    order = [f for f in FIELDS if f in groups] + [f for f in groups if f not in FIELDS]
    for field in order:
        ds = groups[field]
        lines = [f"{_where(d)}  {_value(d.expected)} -> {_value(d.found)}" for d in ds[:examples]]
        if len(ds) > examples:
            lines.append(f"... and {len(ds) - examples} more")
        table.add_row(escape(printable(field)), str(len(ds)), escape("\n".join(lines)))
    console.print(table)
    console.print(f"[red]{len(result.differences)} difference(s)[/red] ({escape(stats)})")
    if result.ignored:
        console.print(f"not compared: {escape(', '.join(result.ignored))}")


class _RichProgress:
    """Two bars: layer bytes read, and files hashed on the found side. Transient."""

    LABELS = {"layers": "reading layers", "content": "hashing contents"}

    def __init__(self, console: Any) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def _task(self, name: str) -> Any:
        with self.lock:  # ticks come from worker threads
            t = self.tasks.get(name)
            if t is None:
                t = self.tasks[name] = self.progress.add_task(self.LABELS.get(name, name), total=None)
            return t

    def total(self, task: str, n: int | None) -> None:
        self.progress.update(self._task(task), total=n)

    def tick(self, task: str, n: int) -> None:
        self.progress.update(self._task(task), advance=n)

    def __enter__(self) -> "_RichProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)
