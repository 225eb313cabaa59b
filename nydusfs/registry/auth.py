"""Registry authentication: anonymous, Basic, and the Bearer token flow.

A 401 carries a `WWW-Authenticate` challenge. `Basic realm=...` is answered with the user's
credentials. `Bearer realm=...,service=...,scope=...` is answered with a token from the realm:
first `GET realm?service=..&scope=..` (credentials as Basic, as the distribution token spec
says), and if the token server refuses GET (404/405/400), an OAuth2 `POST` form
(`grant_type=password` or `refresh_token`). The reply's `token` (or `access_token`) and
`expires_in` (60 s when absent, per the spec) are kept; the token is renewed before it
expires (the last quarter of its life, at most 30 s early) and at once when a request using
it gets a 401 - so a long-lived mount never dies of an expired token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
import urllib.parse

import httpx

from nydusfs.registry.body import read_body
from nydusfs.registry.credentials import Credentials
from nydusfs.registry.errors import RegistryError

TOKEN_LIMIT = 1 << 20        # a token server's answer (tokens are a few KiB)

_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclasses.dataclass(frozen=True)
class Challenge:
    scheme: str                  # "basic" | "bearer" (lowercase)
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header (quoted values may hold commas and
    `=`)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m.group(1).lower()] = value
        pos = m.end()
    return Challenge(scheme.lower(), params)


@dataclasses.dataclass
class Token:
    value: str
    expires_at: float            # time.monotonic()
    ttl: float

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - min(30.0, self.ttl / 4)


class Authenticator:
    """What to put in the Authorization header of requests to one registry repository.

    Thread-safe: worker threads share one instance; one of them fetches a token while the
    others wait for it rather than all asking at once.
    """

    def __init__(self, http: httpx.Client, host: str, scopes: list[str],
                 creds: Credentials | None, timeout: float = 30.0) -> None:
        self.http, self.host, self.creds, self.timeout = http, host, creds, timeout
        self.scopes = list(scopes)
        self.challenge: Challenge | None = None
        self.token: Token | None = None
        self.lock = threading.Lock()
        self.token_requests = 0
        self.use_post_first = bool(creds and creds.identity_token)

    def header(self) -> str | None:
        """The Authorization value to send now (renewing a token about to expire)."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self.creds.basic() if self.creds else None
        if ch.scheme != "bearer":
            return None
        tok = self.token
        if tok is not None and tok.fresh(time.monotonic()):
            return "Bearer " + tok.value
        with self.lock:
            tok = self.token
            if tok is None or not tok.fresh(time.monotonic()):
                tok = self.token = self._fetch(ch)
        return "Bearer " + tok.value

    def unauthorized(self, challenge: Challenge | None, sent: str | None) -> None:
        """A request got 401: take the new challenge and drop the token that was refused."""
        if challenge is None:
            raise RegistryError(f"{self.host}: 401 Unauthorized without a WWW-Authenticate challenge")
        with self.lock:
            scope = challenge.params.get("scope")
            if scope:
                for s in scope.split(" "):
                    if s and s not in self.scopes:
                        self.scopes.append(s)
            self.challenge = challenge
            if sent is not None and self.token is not None and sent == "Bearer " + self.token.value:
                self.token = None

    def _fetch(self, ch: Challenge) -> Token:
        realm = ch.realm
        if not realm:
            raise RegistryError(f"{self.host}: Bearer challenge without a realm: {str(ch.params)[:200]}")
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(f"{self.host}: Bearer challenge realm {realm[:200]!r} is not an http "
                                "or https URL")
        order = ("POST", "GET") if self.use_post_first else ("GET", "POST")
        last: httpx.Response | None = None
        body = b""
        for method in order:
            if method == "POST" and self.creds is None:
                continue  # an OAuth2 password grant needs a user
            try:
                resp = self._request(method, ch, realm)
                try:
                    body = read_body(resp, TOKEN_LIMIT, self.timeout, f"{self.host}: token server {realm[:200]}")
                finally:
                    resp.close()
            except httpx.HTTPError as e:
                raise RegistryError(f"{self.host}: token request to {realm[:200]} failed: {e}") from None
            self.token_requests += 1
            last = resp
            if resp.status_code in (400, 404, 405) and method != order[-1]:
                continue  # the other method may be the one this token server speaks
            break
        assert last is not None
        if last.status_code in (401, 403):
            who = f"user {self.creds.username!r} (from {self.creds.source})" if self.creds else \
                "anonymous access (no credentials found; use --creds or --authfile)"
            raise RegistryError(f"{self.host}: token server {realm[:200]} refused {who}: "
                                f"{last.status_code} {_excerpt(body)}")
        if last.status_code != 200:
            raise RegistryError(f"{self.host}: token server {realm[:200]} answered "
                                f"{last.status_code} {_excerpt(body)}")
        try:
            doc = json.loads(body)
            value = doc.get("token") or doc.get("access_token")
            ttl = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError):
            raise RegistryError(f"{self.host}: token server {realm[:200]} sent no JSON with a token") from None
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{self.host}: token server {realm[:200]} sent neither token nor access_token")
        if not math.isfinite(ttl) or ttl <= 0:
            ttl = 60.0      # as when the server names no lifetime
        if doc.get("refresh_token") and self.creds is not None:
            self.creds = dataclasses.replace(self.creds, identity_token=doc["refresh_token"])
        return Token(value, time.monotonic() + ttl, ttl)

    def _request(self, method: str, ch: Challenge, realm: str) -> httpx.Response:
        service = ch.params.get("service", "")
        if method == "GET":
            params: list[tuple[str, str | int | float | bool | None]] = [("service", service)]
            params += [("scope", s) for s in self.scopes]
            headers = {"Authorization": self.creds.basic()} if self.creds else {}
            req = self.http.build_request("GET", realm, params=params, headers=headers)
            return self.http.send(req, stream=True)     # read within bounds by the caller
        form = {"service": service, "scope": " ".join(self.scopes), "client_id": "nydusfs"}
        assert self.creds is not None
        if self.creds.identity_token:
            form |= {"grant_type": "refresh_token", "refresh_token": self.creds.identity_token}
        else:
            form |= {"grant_type": "password", "username": self.creds.username,
                     "password": self.creds.password}
        return self.http.send(self.http.build_request("POST", realm, data=form), stream=True)


def _excerpt(body: bytes) -> str:
    text = body[:400].decode("utf-8", "replace").strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 else text
