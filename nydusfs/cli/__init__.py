"""Command line: `nydusfs VERB ...`. Each verb lives in its own module with `register()`.

Errors of the NydusfsError family are printed as one line (`--debug` shows the traceback);
exit status 2 means bad input or usage, 1 means "ran, and found a problem" (check, dump --verify).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Sequence

from .. import __version__
from ..errors import NydusfsError

VERBS = ("create", "merge", "mount", "umount", "check", "dump", "unpack", "explore", "diff", "demo")

EPILOG = """\
Exit status: 0 success; 1 the command ran and found problems (check differences,
dump --verify failures); 2 bad input, usage error or missing file; 130 interrupted.

Environment: NYDUSFS_MAX_BOOTSTRAP (default 512M) is the largest compressed bootstrap
inflated into memory (docs/limits.md lists every limit).
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb, or of `only` one (each verb's imports cost start-up time,
    which matters for `mount`, whose readiness is measured from the process start)."""
    parser = argparse.ArgumentParser(
        prog="nydusfs",
        description="Create, merge, mount, check and dump Nydus (RAFS v5/v6) container images.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nydusfs {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        if only is not None and verb != only:
            continue
        if importlib.util.find_spec(f"{__name__}.{verb}") is None:
            continue
        module = importlib.import_module(f".{verb}", __name__)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    verb = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(words)
    try:
        return int(args.run(args) or 0)
    except NydusfsError as e:
        if args.debug:
            raise
        print(f"nydusfs {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of our output went away (dump | head): not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
