"""Registry credentials kept the way skopeo, podman and docker users keep them.

Order: `--creds USER[:PASS]`; `--authfile FILE`; `$REGISTRY_AUTH_FILE`;
`$XDG_RUNTIME_DIR/containers/auth.json`; `~/.docker/config.json`. Only plain `auths` entries
(`{"auth": base64("user:pass")}` or `username`/`password`, `identitytoken`) are read;
credential helpers (`credHelpers`, `credsStore`) are not run.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

from nydusfs.registry.errors import RegistryError


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str
    password: str = dataclasses.field(repr=False)   # never shown, not even in a repr
    identity_token: str | None = None   # OAuth2 refresh token, sent as a password grant's refresh_token
    source: str = "--creds"

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def parse_creds(text: str, flag: str = "--creds") -> Credentials:
    """`USER[:PASSWORD]`; without the password it is asked for on the terminal, and without a
    terminal that is an error (nothing waits on a pipe for it)."""
    user, sep, password = text.partition(":")
    if not user:
        raise RegistryError(f"{flag}: expected USER[:PASSWORD], found an empty user name")
    if not sep:
        import getpass
        import sys

        if not sys.stdin.isatty():
            raise RegistryError(f"{flag} {user}: no password given and no terminal to ask for it "
                                "(give USER:PASSWORD, or use --authfile)")
        try:
            password = getpass.getpass(f"Password for {user}: ")
        except EOFError:
            raise RegistryError(f"{flag} {user}: no password entered") from None
    return Credentials(user, password, None, flag)


def _default_files() -> list[pathlib.Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(pathlib.Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(pathlib.Path(os.environ["XDG_RUNTIME_DIR"]) / "containers/auth.json")
    files.append(pathlib.Path.home() / ".docker/config.json")
    return files


def _keys_for(host: str, repo: str) -> list[str]:
    """auth.json keys that may match, most specific first (containers-auth.json(5))."""
    keys = []
    path = f"{host}/{repo}"
    while "/" in path:
        keys.append(path)
        path = path.rsplit("/", 1)[0]
    keys += [host, f"https://{host}", f"http://{host}"]
    if host in ("docker.io", "registry-1.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


def from_file(path: pathlib.Path, host: str, repo: str) -> Credentials | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path}: cannot read as an auth file (JSON with \"auths\"): {e}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in _keys_for(host, repo):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise RegistryError(f"{path}: auths[{key!r}].auth is not base64 of USER:PASSWORD") from None
            return Credentials(user, password, entry.get("identitytoken"), str(path))
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""),
                               entry.get("identitytoken"), str(path))
    return None


def lookup(host: str, repo: str, *, creds: str | Credentials | None = None,
           authfile: str | os.PathLike | None = None) -> Credentials | None:
    """The credentials to use for host/repo, or None (anonymous)."""
    if isinstance(creds, Credentials):
        return creds
    if creds:
        return parse_creds(creds)
    if authfile is not None:
        p = pathlib.Path(authfile)
        if not p.exists():
            raise RegistryError(f"--authfile {p}: no such file")
        return from_file(p, host, repo)
    for p in _default_files():
        found = from_file(p, host, repo)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def as_arguments(reference: str, options: dict[str, Any]) -> Iterator[list[str]]:
    """The command-line flags that give another nydusfs process (check --through-mount's
    mount) the same registry options. Credentials never go on a command line: they are
    written to a private auth file, passed with --authfile and removed afterwards."""
    from nydusfs.registry.reference import parse_reference

    args: list[str] = []
    if options.get("tls_verify") is False:
        args.append("--tls-verify=false")
    if options.get("cert_dir"):
        args += ["--cert-dir", os.path.abspath(os.fspath(options["cert_dir"]))]
    if options.get("plain_http"):
        args.append("--plain-http")
    creds = options.get("creds")
    if not creds:
        if options.get("authfile"):
            args += ["--authfile", os.path.abspath(os.fspath(options["authfile"]))]
        yield args
        return
    found = creds if isinstance(creds, Credentials) else parse_creds(str(creds))
    host = parse_reference(reference).host
    with tempfile.TemporaryDirectory(prefix="nydusfs-auth-") as tmp:   # mode 0700
        path = os.path.join(tmp, "auth.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            token = base64.b64encode(f"{found.username}:{found.password}".encode()).decode()
            json.dump({"auths": {host: {"auth": token}}}, f)
        yield args + ["--authfile", path]
