"""`nydusfs explore`: what every layer did, where every file comes from, what space is wasted."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .args import add_platform, add_registry_options, registry_options
from .mount import parse_size
from .show import console as make_console
from .show import shown

HELP = "see what every layer of an image did, where each file comes from and what space is wasted"
DESCRIPTION = """\
Apply an image's layers one by one (OCI image-spec rules, as `nydusfs check` does) and show
what each did: entries added, modified, type-changed, deleted by a whiteout, hidden by an
opaque directory, or replaced along with a parent; which layer wrote the visible version of
every path and which lower versions it shadows; the bytes the layers ship that the final image
does not show (wasted), the efficiency score and how well contents and chunks dedupe.

IMAGE: one image reference (oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE,
docker://HOST/REPO:TAG), an OCI image or a Nydus image (its blob layers hold the layer
bootstraps), or LAYER files: OCI layer tars (plain, gzip, zstd, detected from the bytes),
untarred layer directories, or Nydus layer files / layer bootstraps (chunk figures then come
too), lowest first, in any mix.

Without --report, --json or --ci, and on a terminal, an interactive browser opens (layers,
tree, details; press ? there for its keys) at once, with the layer list the manifest gives (a
Nydus image: also its merged tree, from its bootstrap); the layers are read in the background
and the tree fills in as they come (a progress line says how far), then the waste and dedup
figures.
See docs/explore.md for every figure's definition.
"""
EPILOG = """\
Exit status: 0 success; 1 a --ci threshold was breached; 2 bad input.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("explore", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layers", nargs="+", metavar="IMAGE|LAYER",
                   help="an image reference, or the layers of an image, lowest first")
    add_platform(p, "the image of an index to explore")
    p.add_argument("--blob-dir", action="append", default=[], metavar="DIR",
                   help="directory of blob files named by blob id (repeatable)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--report", action="store_true", help="print tables instead of the browser")
    mode.add_argument("--json", action="store_true", help="print one JSON document")
    mode.add_argument("--ci", action="store_true",
                      help="check the thresholds below and exit 1 if one is breached (as dive --ci)")
    p.add_argument("--lowest-efficiency", type=float, metavar="RATIO",
                   help="--ci: fail below this efficiency score, 0..1 (default with --ci: 0.9)")
    p.add_argument("--highest-wasted-bytes", type=parse_size, metavar="SIZE",
                   help="--ci: fail above this many wasted bytes (K/M/G suffixes; default: no limit)")
    p.add_argument("--highest-wasted-percent", type=float, metavar="RATIO",
                   help="--ci: fail above this share of wasted bytes, 0..1 (default with --ci: 0.1)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="largest wasted files listed (default: 20)")
    add_registry_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..explore.analysis import analyze
    from ..explore.inputs import is_reference, load_image, load_layers, plan_image, plan_layers
    from ..explore.report import analysis_doc, ci_rules

    if args.top < 0:
        raise UsageError("--top: expected a count of 0 or more")
    for name in ("lowest_efficiency", "highest_wasted_percent"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')}: expected a ratio from 0 to 1, found {value}")
    ui = not (args.report or args.json or args.ci) and sys.stdout.isatty()
    reference = len(args.layers) == 1 and is_reference(args.layers[0])
    if not reference and args.platform:
        raise UsageError("--platform goes with an image reference")
    if ui:
        from .explore_ui import run_ui

        # the browser opens with what the manifest says; layers and figures follow
        if reference:
            with plan_image(args.layers[0], args.platform, chunks=False, **registry_options(args)) as plan:
                run_ui(plan=plan)
        else:
            run_ui(plan=plan_layers(args.layers, tuple(args.blob_dir), chunks=False))
        return 0
    if reference:
        layers = load_image(args.layers[0], args.platform, **registry_options(args))
    else:
        layers = load_layers(args.layers, tuple(args.blob_dir))
    analysis = analyze(layers)
    if args.json:
        json.dump(analysis_doc(analysis, args.top), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if args.ci:
        eff = 0.9 if args.lowest_efficiency is None else args.lowest_efficiency
        pct = 0.1 if args.highest_wasted_percent is None else args.highest_wasted_percent
        rules = ci_rules(analysis, eff, args.highest_wasted_bytes, pct)
        _print_report(analysis_doc(analysis, args.top, changes=False))
        return _print_rules(rules)
    _print_report(analysis_doc(analysis, args.top, changes=False))
    return 0


def size_text(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _print_report(doc: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    console = make_console()
    t = Table(title="layers")
    for col in ("#", "layer", "created by", "entries", "source", "nydus", "added", "modified",
                "type", "deleted", "hidden", "replaced", "wasted"):
        t.add_column(col, justify="right" if col not in ("layer", "created by") else "left")
    for layer in doc["layers"]:
        c = layer["counts"]
        t.add_row(str(layer["index"]), Text(shown(layer["name"])), Text(shown(layer["created_by"] or "")),
                  str(layer["entries"]), size_text(layer["source_size"]), size_text(layer["nydus_size"]),
                  str(c["added"]), str(c["modified"]), str(c["type-changed"]), str(c["deleted"]),
                  str(c["hidden"]), str(c["replaced"]), size_text(layer["wasted_bytes"]))
    console.print(t)
    s = doc["summary"]
    lines = [f"entries in the image: {s['entries']}",
             f"file bytes shipped: {size_text(s['shipped_bytes'])}",
             f"wasted: {size_text(s['wasted_bytes'])} ({s['wasted_percent']:.2f}%)",
             f"efficiency score: {100 * s['efficiency']:.2f}%",
             f"file dedup (content): {s['file_dedup']['ratio']:.3f}x"]
    if s["chunk_dedup"] is not None:
        lines.append(f"chunk dedup (digest): {s['chunk_dedup']['ratio']:.3f}x")
    for line in lines:
        console.print(Text(line))
    if doc["wasted"]:
        w = Table(title="largest wasted files")
        for col in ("size", "layer", "path", "why"):
            w.add_column(col, justify="right" if col in ("size", "layer") else "left")
        for item in doc["wasted"]:
            w.add_row(size_text(item["size"]), str(item["layer"]), Text(shown(item["path"])),
                      Text(item["reason"]))
        console.print(w)


def _print_rules(rules: list[Any]) -> int:
    from rich.text import Text

    console = make_console()
    failed = 0
    for r in rules:
        word = "PASS" if r.passed else "FAIL"
        failed += not r.passed
        console.print(Text(f"{word}: {r.name}: {r.value:.6g} (limit {r.limit:.6g})",
                           style="green" if r.passed else "red"))
    return 1 if failed else 0
