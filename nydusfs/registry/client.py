"""A client of the OCI distribution API for one repository: manifests, blobs, Range reads,
uploads; with authentication, redirects and bounded retries.

Built on httpx's synchronous `Client`: one connection pool (HTTP/1.1 keep-alive, so a lazy
read costs one request, not a TCP and TLS handshake), per-phase timeouts, redirects left to us
(307 targets are cached per blob), thread-safe so the FUSE server's worker threads call it
directly and the trio loop is never blocked on the network. httpx is maintained and already
speaks TLS with a caller-made `ssl.SSLContext` (cert dirs, client certificates).

Retries: connection errors, timeouts, bodies cut short, 5xx and 429 are retried with
exponential backoff and full jitter (0.1 s doubling to 5 s; `Retry-After` honoured), until the
`retry_time` budget of the operation is spent; then one error names the registry, the object
and the last failure.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import os
import random
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from nydusfs.registry.auth import Authenticator, parse_challenge
from nydusfs.registry.body import Pace, read_body
from nydusfs.registry.credentials import Credentials
from nydusfs.registry.errors import RegistryError, UploadSessionLost
from nydusfs.registry.reference import Reference

T = TypeVar("T")
log = logging.getLogger("nydusfs.registry")

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MANIFEST_LIMIT = 4 << 20
ERROR_LIMIT = 64 << 10      # an error document's body, read for its message
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "nydusfs/0.1"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class Retry(Exception):
    """A transient failure: try again after a backoff (at least `after` seconds)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.after = reason, after


@dataclasses.dataclass
class BlobStats:
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    errors: int = 0


class Stats:
    """Counters for `nydusfs stats`: requests, bytes, retries and errors, per blob."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blobs: dict[str, BlobStats] = {}
        self.requests = 0
        self.retries = 0

    def blob(self, digest: str) -> BlobStats:
        with self.lock:
            return self.blobs.setdefault(digest, BlobStats())

    def add(self, digest: str | None, *, requests: int = 0, nbytes: int = 0, retries: int = 0,
            errors: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.retries += retries
            if digest is not None:
                b = self.blobs.setdefault(digest, BlobStats())
                b.requests += requests
                b.bytes += nbytes
                b.retries += retries
                b.errors += errors


def ssl_context(host: str, tls_verify: bool, cert_dir: str | os.PathLike | None
                ) -> ssl.SSLContext:
    """System CAs plus a containers-style cert dir: `*.crt` are CAs, `*.cert`+`*.key` a client
    certificate. Without --cert-dir, /etc/containers/certs.d/HOST and /etc/docker/certs.d/HOST
    are used when present."""
    ctx = ssl.create_default_context()
    if not tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    dirs = [os.fspath(cert_dir)] if cert_dir else [
        f"/etc/containers/certs.d/{host}", f"/etc/docker/certs.d/{host}"]
    for d in dirs:
        if cert_dir and not os.path.isdir(d):
            raise RegistryError(f"--cert-dir {d}: not a directory")
        for crt in sorted(glob.glob(os.path.join(glob.escape(d), "*.crt"))):
            try:
                ctx.load_verify_locations(crt)
            except (ssl.SSLError, OSError) as e:
                raise RegistryError(f"{crt}: not a PEM CA certificate: {e}") from None
        for cert in sorted(glob.glob(os.path.join(glob.escape(d), "*.cert"))):
            key = cert[:-5] + ".key"
            try:
                ctx.load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as e:
                raise RegistryError(f"{cert}: client certificate with {key} unusable: {e}") from None
    return ctx


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _plain_http_answer(e: Exception) -> bool:
    """Whether a TLS handshake failed because the server speaks plain HTTP."""
    text = str(e).lower()
    return any(s in text for s in ("wrong version number", "record layer failure",
                                   "packet length too long", "unknown protocol"))


def _error_excerpt(resp: httpx.Response, body: bytes) -> str:
    try:
        doc = json.loads(body)
        errs = doc.get("errors") or []
        if errs:
            text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errs[:3])
            return text if len(text) <= 300 else text[:300] + "..."
    except Exception:  # noqa: BLE001 - any body that is not the JSON error shape
        pass
    return resp.reason_phrase[:100]


class RegistryClient:
    """One repository on one registry. Thread-safe."""

    def __init__(self, ref: Reference, *, creds: Credentials | None = None,
                 actions: str = "pull", extra_scopes: list[str] | None = None,
                 tls_verify: bool = True, cert_dir: str | os.PathLike | None = None,
                 plain_http: bool = False, timeout: float = 30.0, retry_time: float = 30.0,
                 connect_retry_time: float = 2.0, max_connections: int = 16) -> None:
        self.ref = ref
        self.where = str(ref)      # every error names the reference as written
        self.retry_time = retry_time
        self.timeout = timeout
        self.connect_retry_time = connect_retry_time
        self.http = httpx.Client(
            verify=ssl_context(ref.endpoint, tls_verify, cert_dir),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            follow_redirects=False, trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        scopes = [f"repository:{ref.repo}:{actions}"] + list(extra_scopes or [])
        self.auth = Authenticator(self.http, self.where, scopes, creds, timeout)
        self.scheme = "http" if plain_http else "https"
        self.allow_http_fallback = not plain_http and ref.is_loopback
        self.redirects: dict[str, str] = {}
        self.redirect_lock = threading.Lock()
        self.stats = Stats()
        self.failing: set[str] = set()     # blobs whose last read failed (logged once)
        self.failing_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.ref.endpoint}/v2/{self.ref.repo}"

    def close(self) -> None:
        self.http.close()

    def retrying(self, what: str, attempt: Callable[[], T], *, digest: str | None = None,
                 budget: float | None = None) -> T:
        """Run `attempt` until it returns, retrying `Retry` and transport errors with
        backoff until the time budget is spent."""
        deadline = time.monotonic() + (self.retry_time if budget is None else budget)
        n = 0
        while True:
            try:
                result = attempt()
                if digest is not None and digest in self.failing:
                    with self.failing_lock:
                        self.failing.discard(digest)
                    log.warning("%s: blob %s: reads work again", self.where, digest)
                return result
            except (Retry, httpx.TransportError) as e:
                reason = e.reason if isinstance(e, Retry) else f"{type(e).__name__}: {e}"
                after = e.after if isinstance(e, Retry) else None
                n += 1
                delay = random.uniform(0, min(5.0, 0.1 * 2 ** n))  # full jitter
                if after is not None:
                    delay = max(delay, after)
                if time.monotonic() + delay > deadline:
                    self.stats.add(digest, errors=1)
                    err = RegistryError(f"{self.where}: {what}: {reason} "
                                        f"(gave up after {n} attempts)")
                    if digest is not None:
                        with self.failing_lock:
                            first = digest not in self.failing
                            self.failing.add(digest)
                        if first:       # once per blob until it works again
                            log.error("%s", err)
                    raise err from None
                self.stats.add(digest, retries=1)
                time.sleep(delay)

    def _send(self, method: str, url: str, *, headers: dict[str, str] | None = None,
              content: bytes | None = None, auth: bool = True,
              digest: str | None = None) -> httpx.Response:
        """One request (streamed response), with the auth dance: a 401 takes the challenge,
        gets a token or Basic credentials, and the request is sent once more."""
        h = dict(headers or {})
        sent = self.auth.header() if auth else None
        if sent:
            h["Authorization"] = sent
        resp = self._raw(method, url, h, content, digest)
        if resp.status_code != 401 or not auth:
            return resp
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        resp.close()
        self.auth.unauthorized(challenge, sent)
        value = self.auth.header()
        if value is None:
            raise RegistryError(f"{self.where}: authentication required and no credentials "
                                "found (use --creds or --authfile)")
        h["Authorization"] = value
        resp = self._raw(method, url, h, content, digest)
        if resp.status_code == 401:
            resp.close()
            who = (f"user {self.auth.creds.username!r} (from {self.auth.creds.source})"
                   if self.auth.creds else "anonymous access")
            raise RegistryError(f"{self.where}: {method} refused for {who}: 401 Unauthorized")
        return resp

    def _raw(self, method: str, url: str, headers: dict[str, str], content: bytes | None,
             digest: str | None) -> httpx.Response:
        req = self.http.build_request(method, url, headers=headers, content=content)
        self.stats.add(digest, requests=1)
        try:
            resp = self.http.send(req, stream=True)
        except httpx.ConnectError as e:
            tls_base = f"https://{self.ref.endpoint}/"
            if (self.allow_http_fallback and self.scheme == "https" and url.startswith(tls_base)
                    and _plain_http_answer(e)):
                # a loopback registry speaking plain HTTP: the same request again at once (no
                # backoff: the answer was not a transient failure)
                self.scheme = "http"
                self.stats.add(digest, retries=1)
                return self._raw(method, "http://" + url[len("https://"):], headers, content, digest)
            raise
        if resp.status_code in RETRY_STATUS:
            after = _retry_after(resp)
            resp.close()
            raise Retry(f"{method} {urllib.parse.urlsplit(url).path}: {resp.status_code} "
                        f"{resp.reason_phrase}", after)
        return resp

    def _fail(self, what: str, resp: httpx.Response) -> RegistryError:
        try:    # the error document, if it is small and comes quickly
            body = read_body(resp, ERROR_LIMIT, self.timeout, f"{self.where}: {what}")
        except (httpx.HTTPError, httpx.StreamError, RegistryError):
            body = b""      # closed already, cut, too large or too slow: the status is enough
        resp.close()
        if resp.status_code == 404:
            return RegistryError(f"{self.where}: {what}: not found (404: {_error_excerpt(resp, body)})")
        return RegistryError(f"{self.where}: {what}: {resp.status_code} {_error_excerpt(resp, body)}")

    # --- pull -----------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/ once: the registry is reachable, speaks the API, and tells us its auth
        scheme. A registry that is down fails here fast (connect_retry_time)."""
        def attempt() -> None:
            url = f"{self.scheme}://{self.ref.endpoint}/v2/"
            try:
                resp = self._raw("GET", url, {}, None, None)
            except httpx.ConnectError as e:
                if isinstance(e.__cause__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(e):
                    raise RegistryError(f"{self.where}: TLS certificate not trusted: {e} "
                                        "(--cert-dir DIR with the CA, or --tls-verify=false)") from None
                raise
            resp.close()
            if resp.status_code == 401:
                ch = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                self.auth.unauthorized(ch, None)
            elif resp.status_code != 200:
                raise RegistryError(f"{self.where}: {self.ref.endpoint} is not an OCI distribution registry "
                                    f"(GET /v2/ answered {resp.status_code})")
        self.retrying(f"cannot reach the registry at {self.scheme}://{self.ref.endpoint}",
                      attempt, budget=self.connect_retry_time)

    def get_manifest(self, ref: str) -> tuple[bytes, str]:
        """Raw bytes and media type of the manifest or index `ref` (tag or digest)."""
        def attempt() -> tuple[bytes, str, str]:
            resp = self._send("GET", f"{self.base}/manifests/{ref}",
                              headers={"Accept": ", ".join(MANIFEST_TYPES)})
            with closing(resp):
                if resp.status_code != 200:
                    raise self._fail(f"manifest {ref}", resp)
                data = self._read_limited(resp, MANIFEST_LIMIT, f"manifest {ref}")
            media = resp.headers.get("Content-Type", "").split(";")[0].strip()
            return data, media, resp.headers.get("Docker-Content-Digest", "").strip()
        data, media, claimed = self.retrying(f"manifest {ref}", attempt)
        found = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and found != ref:
            raise RegistryError(f"{self.where}: manifest {ref}: bytes do not match the digest "
                                f"(found {found})")
        if claimed.startswith("sha256:") and claimed != found:
            raise RegistryError(f"{self.where}: manifest {ref}: header Docker-Content-Digest says "
                                f"{claimed[:80]!r}, the bytes have digest {found}")
        return data, media

    def _read_limited(self, resp: httpx.Response, limit: int, what: str) -> bytes:
        length = resp.headers.get("Content-Length")
        try:
            out = read_body(resp, limit, self.timeout, f"{self.where}: {what}")
        except httpx.TransportError as e:
            raise Retry(f"{what}: body cut short: {e}") from None
        if length and len(out) != int(length):
            raise Retry(f"{what}: body cut short at {len(out)} of {length} bytes")
        return bytes(out)

    def get_blob(self, digest: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET a blob (streamed), following redirects without Authorization and caching the
        final URL per blob; a cached URL refused with 401/403 is dropped and the registry
        asked again. Statuses other than 200/206 are the caller's to judge."""
        h = dict(headers or {})
        with self.redirect_lock:
            cached = self.redirects.get(digest)
        if cached is not None:
            resp = self._raw("GET", cached, h, None, digest)
            if resp.status_code not in (401, 403):
                return resp
            resp.close()
            with self.redirect_lock:
                self.redirects.pop(digest, None)
        resp = self._send("GET", f"{self.base}/blobs/{digest}", headers=h, digest=digest)
        hops = 0
        url = str(resp.request.url)
        while resp.status_code in REDIRECT_STATUS and "Location" in resp.headers:
            hops += 1
            if hops > 5:
                resp.close()
                raise RegistryError(f"{self.where}: blob {digest}: more than 5 redirects")
            url = urllib.parse.urljoin(url, resp.headers["Location"])
            resp.close()
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise RegistryError(f"{self.where}: blob {digest}: redirected to {url[:200]!r}, "
                                    "not an http or https URL")
            resp = self._raw("GET", url, h, None, digest)   # no Authorization to the target
        if hops and resp.status_code < 400:
            with self.redirect_lock:
                self.redirects[digest] = url
        return resp

    def read_range(self, digest: str, offset: int, length: int,
                   progress: Callable[[memoryview, int], None] | None = None
                   ) -> bytes | bytearray:
        """Exactly `length` bytes of a blob at `offset` (the caller keeps within the blob).
        A 206 must carry the Content-Range asked for; a 200 (Range ignored) is read only up
        to the end of the range; a short body is retried. `progress(buffer, n)` is called as
        the first n bytes come in (from 0 again if the request is retried)."""
        if length <= 0:
            return b""
        end = offset + length - 1

        def attempt() -> bytearray:
            resp = self.get_blob(digest, {"Range": f"bytes={offset}-{end}"})
            with closing(resp):
                if resp.status_code == 206:
                    m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
                    if not m or int(m.group(1)) != offset or int(m.group(2)) != end:
                        raise RegistryError(
                            f"{self.where}: blob {digest}: asked for bytes {offset}-{end}, the "
                            f"206 answer has Content-Range {resp.headers.get('Content-Range')!r}")
                    skip = 0
                elif resp.status_code == 200:
                    skip = offset           # Range ignored: the whole blob from byte 0
                elif resp.status_code == 416:
                    raise RegistryError(f"{self.where}: blob {digest}: range {offset}-{end} "
                                        "is beyond the end of the blob (416)")
                else:
                    raise self._fail(f"blob {digest} range {offset}-{end}", resp)
                data = self._read_span(resp, skip, length, digest, progress)
            self.stats.add(digest, nbytes=len(data))
            return data
        return self.retrying(f"blob {digest} bytes {offset}-{end}", attempt, digest=digest)

    def _read_span(self, resp: httpx.Response, skip: int, length: int, digest: str,
                   progress: Callable[[memoryview, int], None] | None = None) -> bytearray:
        """`length` bytes after `skip` bytes of the body, copied once into one buffer (a
        blob range is MiBs: growing a buffer and copying it out cost more than the socket).
        A 206 body is read to its end, so the connection goes back to the pool; a 200 (the
        whole blob) is cut off."""
        skip_rest = resp.status_code == 200
        out = bytearray(length)
        view = memoryview(out)
        got = 0
        pace = Pace(self.timeout, f"{self.where}: blob {digest}")
        try:
            for part in resp.iter_raw():
                pace.add(len(part))
                if skip:
                    if len(part) <= skip:
                        skip -= len(part)
                        continue
                    part, skip = part[skip:], 0
                n = len(part)
                if got + n > length:
                    if not skip_rest:
                        raise RegistryError(f"{self.where}: blob {digest}: the 206 answer "
                                            f"carried more than the {length} bytes of its range")
                    n = length - got
                view[got:got + n] = part[:n] if n < len(part) else part
                got += n
                if progress is not None:
                    progress(view, got)
                if skip_rest and got >= length:
                    break       # a whole blob: closing the response drops the rest unread
        except httpx.TransportError as e:
            raise Retry(f"body cut short after {got} of {length} bytes: {e}") from None
        if got < length:
            raise Retry(f"body cut short: {got} of {length} bytes")
        return out

    def head_blob(self, digest: str) -> int | None:
        """The blob's size if the repository has it, else None."""
        def attempt() -> int | None:
            resp = self._send("HEAD", f"{self.base}/blobs/{digest}", digest=digest)
            resp.close()
            if resp.status_code in (200, 307, 302):
                return int(resp.headers.get("Content-Length") or -1)
            if resp.status_code == 404:
                return None
            raise self._fail(f"HEAD blob {digest}", resp)
        return self.retrying(f"HEAD blob {digest}", attempt, digest=digest)

    def stream_blob(self, digest: str, offset: int = 0) -> Iterator[bytes]:
        """The blob's bytes from `offset` to the end, one response (the caller resumes from
        where it got to after a failure)."""
        def attempt() -> httpx.Response:
            h = {"Range": f"bytes={offset}-"} if offset else {}
            resp = self.get_blob(digest, h)
            if resp.status_code == 200 and not offset or resp.status_code == 206:
                return resp
            raise self._fail(f"blob {digest}", resp)
        resp = self.retrying(f"blob {digest}", attempt, digest=digest)
        pace = Pace(self.timeout, f"{self.where}: blob {digest}")
        with closing(resp):
            for part in resp.iter_raw():
                pace.add(len(part))
                self.stats.add(digest, nbytes=len(part))
                yield part

    # --- push -----------------------------------------------------------------------------
    def mount_blob(self, digest: str, from_repo: str) -> bool:
        """Cross-repository mount: True when the registry linked the blob without an upload."""
        def attempt() -> bool:
            resp = self._send("POST", f"{self.base}/blobs/uploads/?mount={digest}&from={from_repo}",
                              content=b"", digest=digest)
            resp.close()
            if resp.status_code == 201:
                return True
            if resp.status_code == 202:   # not mountable: an upload session was opened instead
                self._cancel(resp)
                return False
            return False
        return self.retrying(f"mount blob {digest} from {from_repo}", attempt, digest=digest)

    def _cancel(self, resp: httpx.Response) -> None:
        loc = resp.headers.get("Location")
        if loc:
            try:
                self._send("DELETE", urllib.parse.urljoin(str(resp.request.url), loc)).close()
            except (httpx.HTTPError, Retry, RegistryError):
                pass

    def upload_blob(self, digest: str, size: int, chunks: Iterator[bytes],
                    chunk_size: int) -> None:
        """Upload a blob: one chunk goes up monolithically (POST, then PUT ?digest= with the
        bytes); more go up in PATCH chunks (each retried; after a failure the session's Range
        tells how much arrived) and a final PUT ?digest=. The bytes are hashed on the way and
        must match `digest` and `size` before the final PUT."""
        def start() -> str:
            resp = self._send("POST", f"{self.base}/blobs/uploads/", content=b"", digest=digest)
            resp.close()
            if resp.status_code != 202 or "Location" not in resp.headers:
                raise self._fail(f"start upload of {digest}", resp)
            return urllib.parse.urljoin(str(resp.request.url), resp.headers["Location"])
        location = self.retrying(f"start upload of {digest}", start, digest=digest)
        h = hashlib.sha256()
        done = 0
        it = iter(chunks)
        first = next(it, b"")
        second = next(it, None)
        body = b""
        if second is None:
            h.update(first)
            body, done = first, len(first)
        else:
            for chunk in itertools.chain((first, second), it):
                h.update(chunk)
                location = self._patch(digest, location, chunk, done)
                done += len(chunk)
        found = "sha256:" + h.hexdigest()
        if found != digest or done != size:
            raise RegistryError(f"{self.where}: blob {digest}: the bytes read have digest "
                                f"{found} and size {done}, expected size {size}")

        def finish() -> None:
            sep = "&" if "?" in location else "?"
            try:
                resp = self._send("PUT", f"{location}{sep}digest={digest}", content=body,
                                  digest=digest, headers={"Content-Type": "application/octet-stream"})
            except (Retry, httpx.TransportError):
                if self._has(digest):
                    return          # it was committed; the answer was lost
                raise
            resp.close()
            if resp.status_code in (400, 404) and self._has(digest):
                return              # a retried PUT after a lost answer: the session is gone
            if resp.status_code in (400, 404):
                raise UploadSessionLost(str(self._fail(f"finish upload of {digest}", resp)))
            if resp.status_code != 201:
                raise self._fail(f"finish upload of {digest}", resp)
        self.retrying(f"finish upload of {digest}", finish, digest=digest)
        self.stats.add(digest, nbytes=len(body))

    def _patch(self, digest: str, location: str, chunk: bytes, start: int) -> str:
        """Send one chunk. After a failure the upload session says how many bytes it holds
        (and its next Location): the rest of the chunk is sent from there."""
        end = start + len(chunk)
        loc, at = location, start

        def attempt() -> str:
            nonlocal loc, at
            try:
                resp = self._send("PATCH", loc, content=chunk[at - start:], digest=digest, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{at}-{end - 1}"})
            except (Retry, httpx.TransportError):
                found = self._upload_status(loc, digest)
                if found is None or not start <= found[0] <= end:
                    raise UploadSessionLost(f"{self.where}: upload of {digest}: the session "
                                            f"cannot be resumed at byte {at}") from None
                at, loc = found
                if found[0] == end:
                    return found[1]     # it arrived; the answer was lost
                raise
            resp.close()
            if resp.status_code in (400, 404, 416):
                raise UploadSessionLost(str(self._fail(f"upload of {digest} at byte {at}", resp)))
            if resp.status_code != 202:
                raise self._fail(f"upload of {digest} at byte {at}", resp)
            return urllib.parse.urljoin(loc, resp.headers.get("Location", loc))
        new = self.retrying(f"upload of {digest} at byte {start}", attempt, digest=digest)
        self.stats.add(digest, nbytes=len(chunk))
        return new

    def _upload_status(self, location: str, digest: str) -> tuple[int, str] | None:
        """(bytes the upload session holds, its next location), or None if unknown. The
        location's query (distribution's `_state`) may be stale when the last answer was lost,
        so the session URL without it is asked too."""
        bare = urllib.parse.urlsplit(location)._replace(query="").geturl()
        for url in dict.fromkeys((location, bare)):
            try:
                resp = self._send("GET", url, digest=digest)
            except (Retry, httpx.HTTPError):
                continue
            resp.close()
            m = re.fullmatch(r"0-(\d+)", resp.headers.get("Range", ""))
            if resp.status_code == 204 and m:
                held = int(m.group(1)) + 1 if m.group(1) != "0" else 0  # "0-0": maybe empty
                return held, urllib.parse.urljoin(url, resp.headers.get("Location", url))
        return None

    def _has(self, digest: str) -> bool:
        try:
            resp = self._send("HEAD", f"{self.base}/blobs/{digest}", digest=digest)
        except (Retry, httpx.HTTPError):
            return False
        resp.close()
        return resp.status_code == 200

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        def attempt() -> None:
            resp = self._send("PUT", f"{self.base}/manifests/{ref}", content=data,
                              headers={"Content-Type": media_type})
            resp.close()
            if resp.status_code != 201:
                raise self._fail(f"put manifest {ref}", resp)
        self.retrying(f"put manifest {ref}", attempt)
