"""`nydusfs check SRC NYDUS` and `nydusfs check NYDUS`: check on image references."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError


def run_image(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..check import CheckOptions
    from ..image.check import run
    from ..image.reference import looks_like_reference
    from ..util.output import atomic_output, check_paths
    from ..util.show import printable
    from .args import registry_options
    from .check import _RichProgress, render

    refs = args.bootstrap
    if len(refs) > 2 or not all(looks_like_reference(r) for r in refs):
        raise UsageError("with image references give SRC NYDUS or NYDUS alone, both as references "
                         "(oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], "
                         "docker://HOST/REPO[:TAG])")
    for flag, value in (("--layers", args.layers), ("--mounted", args.mounted),
                        ("--manifest", args.manifest)):
        if value:
            raise UsageError(f"{flag} does not apply to image references (the layers and the "
                             "manifest come from the images)")
    source, nydus = (refs[0], refs[1]) if len(refs) == 2 else (None, refs[0])
    check_paths([("--json", args.json_out)])  # before the work, not after it
    opts = CheckOptions(bootstrap=nydus, layers=[], through_mount=args.through_mount,
                        ignore=args.ignore, mtime_precision=args.mtime_precision,
                        content=not args.no_content, workers=args.workers)
    platform = args.platform
    registry = registry_options(args)
    to_stdout = args.json_out == "-"
    console = Console(stderr=to_stdout, highlight=False)
    err = Console(stderr=True)
    if err.is_terminal and not args.no_progress and source is not None:
        with _RichProgress(err) as progress:
            result = run(nydus, source, platform, opts, progress, **registry)
    else:
        result = run(nydus, source, platform, opts, **registry)
    if args.json_out:
        doc: dict[str, Any] = {
            "equal": result.equal, "source": source, "nydus": nydus,
            "rules": {rule: {"ok": not [f for f in result.findings if f.rule == rule]
                             and (rule != "filesystem" or result.filesystem.equal),
                             "findings": [{"where": f.where, "expected": f.expected, "found": f.found}
                                          for f in result.findings if f.rule == rule]}
                      for rule in result.rules}}
        if result.filesystem is not None:
            doc["rules"]["filesystem"]["differences"] = result.filesystem.to_json(opts)["differences"]
        text = json.dumps(doc, indent=1) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            with atomic_output(args.json_out, "--json", text=True) as out:
                out.write(text)
    for rule in result.rules:
        if rule == "filesystem":
            console.print("rule filesystem:")
            render(console, result.filesystem, args.examples)
            continue
        found = [f for f in result.findings if f.rule == rule]
        if not found:
            console.print(f"rule {rule}: [green]ok[/green]")
            continue
        table = Table(title=f"rule {rule}: {len(found)} problem(s)")
        for col in ("where", "expected", "found"):
            table.add_column(col, overflow="fold")
        for f in found[:max(args.examples, 1) * 4]:
            # the values come from the images: escaped for the terminal
            table.add_row(*(escape(printable(v)) for v in (f.where, f.expected, f.found)))
        console.print(table)
    console.print("[green]equal[/green]" if result.equal else "[red]differences found[/red]")
    return 0 if result.equal else 1
