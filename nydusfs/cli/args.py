"""Argument types shared by the verbs: numbers with their range, checked by argparse so that a
bad value is a one-line usage error (exit 2) before any work starts."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

from ..errors import UsageError

MAX_DIGITS = 40          # longer numbers are past any range here (and slow to convert)
MAX_THREADS = 1024


def integer(lo: int, hi: int | None = None, *, base0: bool = False) -> Callable[[str], int]:
    """An argparse type: an integer from `lo` to `hi` (decimal, or 0x/0o/0b with base0)."""
    bounds = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"

    def parse(text: str) -> int:
        value: int | None = None
        if len(text.strip()) <= MAX_DIGITS:
            try:
                value = int(text, 0) if base0 else int(text)
            except ValueError:
                pass
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {text[:60]!r}")
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {value}")
        return value

    parse.__name__ = "integer"
    return parse


def seconds(hi: float) -> Callable[[str], float]:
    """An argparse type: a finite, positive number of seconds up to `hi`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= hi):
            raise argparse.ArgumentTypeError(f"expected seconds, more than 0 and at most {hi:g}, "
                                             f"found {text[:60]!r}")
        return value

    parse.__name__ = "seconds"
    return parse


def output_path(flag: str, path: str | None) -> None:
    """Refuse, before any work, a file written in place (a log) that the command could not
    write: a directory, or a file in a directory that does not exist."""
    if path is None or path == "-":
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory (give a file name)")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")


# --- image references: platform and registry options ---------------------------------------

def platform_type(text: str) -> Any:
    """An argparse type: OS/ARCH[/VARIANT] (one parser for every verb that takes --platform)."""
    from ..image.manifest import parse_platform
    from ..image.source import ImageError

    try:
        return parse_platform(text)
    except ImageError as e:
        why = str(e).removeprefix(f"--platform {text!r}: ")
        raise argparse.ArgumentTypeError(f"{why}, found {text[:60]!r}") from None


platform_type.__name__ = "platform"


def add_platform(p: argparse._ActionsContainer, what: str = "the image of this platform from an index") -> None:
    p.add_argument("--platform", type=platform_type, metavar="OS/ARCH[/VARIANT]",
                   help=f"{what} (default: the host's)")


def platform_for(arg: str, platform: Any) -> Any:
    """--platform, refused when the argument is a file and not an image reference."""
    from ..image.reference import looks_like_reference

    if platform is not None and (not looks_like_reference(arg) or os.path.exists(arg)):
        raise UsageError(f"--platform applies to image references, not to the file {arg}")
    return platform


REGISTRY_HELP = """\
For docker:// references only (ignored for oci:, oci-archive:, docker-archive: and files).
Credentials are looked up, first found wins: --creds, --authfile,
$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json."""

CONVERT_REGISTRY_HELP = REGISTRY_HELP + """
The unprefixed options apply to both SRC and DST; a --src-*/--dest-* option applies to its side
only and wins over the unprefixed one there."""

#: (name, metavar or None for a switch, help); a password never reaches logs, errors or `ps`
_REGISTRY_OPTIONS = (
    ("creds", "USER[:PASSWORD]",
     "credentials for the registry (without :PASSWORD it is asked for on the terminal); the "
     "password is blanked out of the process's command line"),
    ("authfile", "FILE", "auth file (containers-auth.json or docker config.json) to take credentials from"),
    ("tls-verify", "true|false",
     "verify the registry's TLS certificate (default: true); the value goes after `=`, as in "
     "--tls-verify=false, and a bare --tls-verify means true"),
    ("cert-dir", "DIR", "directory of *.crt CA certificates and *.cert/*.key client certificates"),
    ("plain-http", None, "speak plain HTTP to the registry (default: HTTPS; plain HTTP is used "
                         "by itself for loopback registries that answer it)"),
)
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def boolean(text: str) -> bool:
    """An argparse type: true or false (as Go's flag package spells them)."""
    value = BOOL_WORDS.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, found {text[:60]!r}")
    return value


boolean.__name__ = "boolean"


ALL_TLS_FLAGS = frozenset(("--tls-verify", "--src-tls-verify", "--dest-tls-verify"))


def expand_bare_flags(words: list[str]) -> list[str]:
    """`--tls-verify` alone means `--tls-verify=true` (skopeo's boolean flags take their
    value only after `=`, so `--tls-verify docker://...` leaves the reference alone)."""
    out: list[str] = []
    for i, w in enumerate(words):
        if w == "--":
            return out + words[i:]
        out.append(f"{w}=true" if w in ALL_TLS_FLAGS else w)
    return out


def add_registry_options(p: argparse.ArgumentParser, sides: bool = False) -> None:
    """The registry options, as skopeo and podman spell them; with `sides` (convert) also the
    --src-*/--dest-* forms."""
    group = p.add_argument_group("registry options", CONVERT_REGISTRY_HELP if sides else REGISTRY_HELP)
    prefixes = ("", "src-", "dest-") if sides else ("",)
    for pre in prefixes:
        for name, metavar, text in _REGISTRY_OPTIONS:
            flag, dest = f"--{pre}{name}", f"{pre}{name}".replace("-", "_")
            if pre:
                text = f"--{name} for {'SRC' if pre == 'src-' else 'DST'} only"
            if metavar is None:
                group.add_argument(flag, dest=dest, action="store_const", const=True, default=None,
                                   help=text)
            elif name == "tls-verify":
                group.add_argument(flag, dest=dest, type=boolean, default=None, metavar=metavar,
                                   help=text)
            elif name == "creds":
                group.add_argument(flag, dest=dest, action=_Creds, default=None, metavar=metavar, help=text)
            else:
                group.add_argument(flag, dest=dest, default=None, metavar=metavar, help=text)


class _Creds(argparse.Action):
    """--creds: the password leaves the command line as soon as it is parsed, whatever the
    verb then does with it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        hide_in_command_line(str(values))
        setattr(namespace, self.dest, values)


def registry_options(args: argparse.Namespace, side: str = "") -> dict[str, Any]:
    """The keyword options for image.open_source/open_target from the parsed flags (None:
    not given, the registry's default). `side` is "src" or "dest" for convert's prefixed
    forms, which win over the unprefixed ones."""
    out: dict[str, Any] = {}
    for name, _, _ in _REGISTRY_OPTIONS:
        dest = name.replace("-", "_")
        value = getattr(args, f"{side}_{dest}", None) if side else None
        flag = f"--{side}-{name}" if value is not None else f"--{name}"
        if value is None:
            value = getattr(args, dest, None)
        if dest == "creds" and isinstance(value, str):
            # parsed once per flag (asked for once on a terminal), then shared by both sides
            from ..registry.credentials import parse_creds   # loads httpx: only when needed

            cache = args.__dict__.setdefault("_parsed_creds", {})
            if flag not in cache:
                cache[flag] = parse_creds(value, flag)
            value = cache[flag]
        out[dest] = value
    return out


def hide_in_command_line(creds: str) -> None:
    """Overwrite the password of a `USER:PASSWORD` argument (alone, or after `=`) with `*`
    where the kernel keeps this process's arguments, so that ps and /proc/PID/cmdline (also of
    a mount's background server) do not show it. Linux only; elsewhere, and if the memory
    cannot be found, nothing is done."""
    user, sep, password = creds.partition(":")
    if not sep or not password:
        return
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])   # arg_start, arg_end (fields 48, 49)
        with open("/proc/self/cmdline", "rb") as f:
            shown = f.read()
    except (OSError, IndexError, ValueError):
        return
    if not 0 < end - start == len(shown):
        return
    value = creds.encode()
    pos = 0
    for arg in shown.split(b"\0"):
        if arg == value or arg.endswith(b"=" + value):
            at = pos + len(arg) - len(value) + len(user.encode()) + 1
            n = len(value) - len(user.encode()) - 1
            ctypes.memmove(start + at, b"*" * n, n)
        pos += len(arg) + 1
