"""Command line: `nydusfs VERB ...`. Each verb lives in its own module with `register()`.

Errors of the NydusfsError family are printed as one line (`--debug` shows the traceback);
exit status 2 means bad input or usage, 1 means "ran, and found a problem" (check, dump --verify).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import NydusfsError
from ..util.show import printable

VERBS = ("create", "merge", "convert", "mount", "umount", "stats", "check", "dump", "unpack", "explore", "diff",
         "demo")

EPILOG = """\
Exit status: 0 success; 1 the command ran and found problems (check differences,
dump --verify failures); 2 bad input, usage error or missing file; 130 interrupted.

Environment: NYDUSFS_MAX_BOOTSTRAP (default 512M) is the largest compressed bootstrap
inflated into memory (docs/limits.md lists every limit).
"""


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb, or of `only` one (each verb's imports cost start-up time,
    which matters for `mount`, whose readiness is measured from the process start)."""
    parser = Parser(
        prog="nydusfs",
        description="Create, merge, convert, mount, check and dump Nydus (RAFS v5/v6) container images.",
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
    from .args import expand_bare_flags

    words = expand_bare_flags(list(sys.argv[1:] if argv is None else argv))
    verb = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(words)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()      # a full disk or closed pipe surfaces here, not at exit
        return status
    except NydusfsError as e:
        if args.debug:
            raise
        return _fail(args.verb, str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as e:
        # the environment refused (a directory where a file goes, a full disk, /proc): the
        # file it names and the reason are the whole story
        if args.debug:
            raise
        stdout_failed = _drop_stdout()
        if e.filename is None and stdout_failed:
            return _fail(args.verb, f"standard output: {e.strerror or e}")
        if e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return _fail(args.verb, f"cannot write the output: {e.strerror}")
        return _fail(args.verb, os_error_text(e))
    except (MemoryError, RecursionError) as e:
        if args.debug:
            raise
        return _fail(args.verb, f"out of {'memory' if isinstance(e, MemoryError) else 'stack'}")
    except Exception as e:  # a bug: still one line, --debug shows the traceback
        if args.debug:
            raise
        return _fail(args.verb, f"internal error ({type(e).__name__}: {e}); run "
                     f"`nydusfs --debug {args.verb} ...` for the traceback")


def os_error_text(e: OSError) -> str:
    """`FILE: reason` of an OSError, as one line. Of a rename the destination is named: that is
    the path the user gave, the source a temporary file."""
    reason = e.strerror or str(e)
    name = e.filename2 if e.filename2 is not None else e.filename
    if name is None:
        return reason
    return f"{os.fsdecode(name) if isinstance(name, bytes) else name}: {reason}"


def _fail(verb: str, message: str) -> int:
    """One line on stderr, everything a terminal would act on escaped; exit status 2."""
    line = printable(message.replace("\n", " ").rstrip())
    try:
        print(f"nydusfs {verb}: error: {line}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return 2


def _broken_pipe() -> int:
    # the reader of our output went away (dump | head): not an error of ours
    _drop_stdout(always=True)
    return 0


def _drop_stdout(always: bool = False) -> bool:
    """Send what is still buffered for stdout to /dev/null when stdout cannot take it, so the
    interpreter's final flush does not fail a second time with a traceback. True if it could
    not take it."""
    if not always:
        try:
            sys.stdout.flush()
            return False
        except (OSError, ValueError):
            pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return True
