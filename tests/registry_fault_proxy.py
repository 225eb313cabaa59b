"""A fault-injecting HTTP proxy for the registry tests, and the "object storage" it redirects to.

`FaultProxy` listens on 127.0.0.1 and forwards every request to a real registry. Tests switch
faults on while a client works through it:

* `latency` seconds added before each request is forwarded;
* `fail(n, status, retry_after)`: the next n matching requests are answered with that status
  (5xx or 429 bursts) without reaching the registry;
* `drop(n, after)`: the next n matching responses are cut after `after` body bytes (the
  connection is closed mid-body);
* `lose(n, match, methods)`: the next n matching requests reach the registry but their answer
  is lost (connection closed before the status line);
* `ignore_range`: the Range header is removed, so the registry answers 200 with the whole blob;
* `shift_range`: the registry is asked for the range one byte further (a wrong Content-Range);
* `redirect`: blob GETs the registry would serve are answered 307 to a `BlobServer` (presigned
  URLs that expire when `BlobServer.rotate()` is called);
* `revoke_tokens()`: bearer tokens seen so far are refused (401 with the registry's own
  challenge), as after a token expires; tokens past their `exp` are always refused;
* `answer(n, path, ...)`: the next n requests for a path (a regular expression matched against
  the whole path) get a made-up answer instead of the registry's: any status, headers and
  body, a Content-Length that lies, a body without end, or one trickled a byte at a time
  (a hostile registry, or a token server answering garbage);
* `forward_body(n, path, edit)`: the registry's answer with its body passed through `edit`.

Every request is recorded in `log` (method, path, status, Range, Authorization scheme).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade",
       "trailer"}
BLOB_PATH = re.compile(r"^/v2/(.+)/blobs/sha256:([0-9a-f]{64})$")


def _token_times(auth: str) -> tuple[float, float] | None:
    """(iat, exp) of a bearer JWT, or None when the header carries none."""
    if not auth.lower().startswith("bearer "):
        return None
    try:
        part = auth[7:].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return float(claims.get("iat", 0)), float(claims.get("exp", 0))
    except (IndexError, ValueError):
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class BlobServer(_Base):
    """Serves blobs straight from a filesystem-driver registry's storage directory, as object
    storage behind a redirect: Range honoured, Authorization refused (a presigned URL carries
    its own signature), URLs valid for one `generation` only."""

    def __init__(self, storage_root: str) -> None:
        self.root = storage_root
        self.generation = 1
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(_BlobHandler)

    def url_for(self, hexdigest: str) -> str:
        return f"http://{self.host}/blob/{hexdigest}?sig={self.generation}"

    def rotate(self) -> None:
        """Expire every URL handed out so far."""
        self.generation += 1

    def path_of(self, hexdigest: str) -> str:
        return os.path.join(self.root, "docker/registry/v2/blobs/sha256", hexdigest[:2],
                            hexdigest, "data")


class _BlobHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               send_body: bool = True) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        owner: BlobServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        sig = urllib.parse.parse_qs(url.query).get("sig", [""])[0]
        hexdigest = url.path.rsplit("/", 1)[-1]
        entry = {"path": url.path, "authorization": self.headers.get("Authorization"),
                 "range": self.headers.get("Range"), "sig": sig}
        with owner.lock:
            owner.log.append(entry)
        if self.headers.get("Authorization"):
            entry["status"] = 400
            self._reply(400, b"Authorization header on a presigned URL")
            return
        if sig != str(owner.generation):
            entry["status"] = 403
            self._reply(403, b"presigned URL expired")
            return
        try:
            with open(owner.path_of(hexdigest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            entry["status"] = 404
            self._reply(404)
            return
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            entry["status"] = 206
            self._reply(206, data[start:end + 1],
                        {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        else:
            entry["status"] = 200
            self._reply(200, data)


class FaultProxy(_Base):
    def __init__(self, upstream: str, *, ssl_context: ssl.SSLContext | None = None,
                 blob_server: BlobServer | None = None) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream_scheme, self.upstream_netloc = u.scheme, u.netloc
        self.ssl_context = ssl_context
        self.blob_server = blob_server
        self.latency = 0.0
        self.ignore_range = False
        self.shift_range = False
        self.redirect = False
        self.seen_tokens: set[str] = set()
        self.revoked: set[str] = set()
        self.rules: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(_ProxyHandler)

    # --- fault switches -------------------------------------------------------------------
    def fail(self, n: int, status: int = 500, *, retry_after: str | None = None,
             match: str = "/blobs/", methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
        with self.lock:
            self.rules.append({"kind": "status", "n": n, "status": status, "methods": methods,
                               "retry_after": retry_after, "match": match})

    def drop(self, n: int, *, after: int = 1000, match: str = "/blobs/") -> None:
        with self.lock:
            self.rules.append({"kind": "drop", "n": n, "after": after, "match": match,
                               "methods": ("GET",)})

    def lose(self, n: int, *, match: str, methods: tuple[str, ...]) -> None:
        """The request reaches the registry, the answer is lost (connection closed)."""
        with self.lock:
            self.rules.append({"kind": "lose", "n": n, "match": match, "methods": methods})

    def answer(self, n: int, path: str, *, status: int = 200, headers: dict[str, str] | None = None,
               body: bytes = b"", length: int | None = None, endless: bool = False,
               trickle: float = 0.0, fast: int = 0,
               methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
        """`length` is the Content-Length sent (default the body's); `endless` repeats the body
        until the client goes away; `trickle` sends it one byte per that many seconds, after
        its first `fast` bytes at once."""
        with self.lock:
            self.rules.append({"kind": "answer", "n": n, "path": re.compile(path), "match": "",
                               "methods": methods, "status": status, "headers": dict(headers or {}),
                               "body": body, "length": length, "endless": endless, "trickle": trickle,
                               "fast": fast})

    def forward_body(self, n: int, path: str, edit: Any, methods: tuple[str, ...] = ("GET",)) -> None:
        with self.lock:
            self.rules.append({"kind": "edit", "n": n, "path": re.compile(path), "match": "",
                               "methods": methods, "edit": edit})

    def revoke_tokens(self) -> None:
        """Refuse every bearer token seen so far."""
        with self.lock:
            self.revoked |= self.seen_tokens

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
        self.latency, self.ignore_range, self.redirect = 0.0, False, False
        self.shift_range = False

    def take_rule(self, method: str, path: str) -> dict[str, Any] | None:
        bare = urllib.parse.urlsplit(path).path
        with self.lock:
            for rule in self.rules:
                where = rule["path"].fullmatch(bare) if "path" in rule else rule["match"] in path
                if where and method in rule["methods"]:
                    rule["n"] -= 1
                    if rule["n"] <= 0:
                        self.rules.remove(rule)
                    return rule
        return None

    def requests(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log
                    if (method is None or e["method"] == method) and contains in e["path"]]

    def upstream(self) -> http.client.HTTPConnection:
        if self.upstream_scheme == "https":
            return http.client.HTTPSConnection(self.upstream_netloc, context=self.ssl_context,
                                               timeout=30)
        return http.client.HTTPConnection(self.upstream_netloc, timeout=30)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, method: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
        owner: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        conn = owner.upstream()
        try:
            conn.request(method, self.path, body=body if body or method in ("PUT", "POST", "PATCH")
                         else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        owner: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        method = self.command
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Host"] = owner.upstream_netloc
        entry: dict[str, Any] = {"method": method, "path": urllib.parse.urlsplit(self.path).path,
                                 "range": self.headers.get("Range"),
                                 "auth": (self.headers.get("Authorization") or " ").split(" ")[0]}
        with owner.lock:
            owner.log.append(entry)
        if owner.latency:
            time.sleep(owner.latency)
        rule = owner.take_rule(method, self.path)
        if rule is not None and rule["kind"] == "answer":
            entry["status"] = rule["status"]
            self._answer(rule, head=method == "HEAD")
            return
        if rule is not None and rule["kind"] == "status":
            entry["status"] = rule["status"]
            extra = {"Retry-After": rule["retry_after"]} if rule["retry_after"] else {}
            self._send(rule["status"], list(extra.items()), b'{"errors":[]}')
            return
        auth = headers.get("Authorization", "")
        times = _token_times(auth)
        if times is not None:
            with owner.lock:
                owner.seen_tokens.add(auth)
                revoked = auth in owner.revoked
        if times is not None and (revoked or times[1] < time.time()):
            headers.pop("Authorization")  # the registry answers with its real challenge
            entry["refused_token"] = True
        if owner.ignore_range:
            headers.pop("Range", None)
        m_range = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("Range", ""))
        if owner.shift_range and m_range:   # a server answering another range than asked
            headers["Range"] = f"bytes={int(m_range.group(1)) + 1}-{int(m_range.group(2)) + 1}"
        m = BLOB_PATH.match(urllib.parse.urlsplit(self.path).path)
        if owner.redirect and owner.blob_server and m and method == "GET":
            status, rheaders, data = self._forward("HEAD", headers, b"")
            if status in (200, 206):
                entry["status"] = 307
                self._send(307, [("Location", owner.blob_server.url_for(m.group(2)))], b"")
                return
            entry["status"] = status
            self._send(status, rheaders, b"")
            return
        try:
            status, rheaders, data = self._forward(method, headers, body)
        except OSError as e:
            entry["status"] = 502
            self._send(502, [], str(e).encode())
            return
        entry["status"] = status
        if rule is not None and rule["kind"] == "lose":
            entry["lost"] = True
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if rule is not None and rule["kind"] == "edit":
            data = rule["edit"](data)
        if rule is not None and rule["kind"] == "drop":
            entry["dropped"] = True
            self._send(status, rheaders, data, cut=rule["after"])
            return
        self._send(status, rheaders, data, head=method == "HEAD")

    def _answer(self, rule: dict[str, Any], head: bool) -> None:
        body: bytes = rule["body"]
        self.send_response(rule["status"])
        for k, v in rule["headers"].items():
            self.send_header(k, v)
        if not rule["endless"] or rule["length"] is not None:
            self.send_header("Content-Length", str(len(body) if rule["length"] is None else rule["length"]))
        else:
            self.close_connection = True    # the body ends when the connection does
        self.end_headers()
        if head:
            return
        try:
            while True:
                if rule["trickle"]:
                    self.wfile.write(body[:rule["fast"]])
                    self.wfile.flush()
                    for i in range(rule["fast"], len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(rule["trickle"])
                else:
                    self.wfile.write(body)
                if not rule["endless"]:
                    break
        except OSError:
            pass    # the client gave up: what an endless answer waits for
        self.wfile.flush()
        if rule["length"] is not None and rule["length"] != len(body):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes, *,
              cut: int | None = None, head: bool = False) -> None:
        owner: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        self.send_response(status)
        length = None
        for k, v in headers:
            if k.lower() in HOP:
                continue
            if k.lower() == "content-length":
                length = v
                continue
            if k.lower() == "location" and owner.upstream_netloc in v:
                v = v.replace(f"{owner.upstream_scheme}://{owner.upstream_netloc}",
                              f"http://{owner.host}")
            self.send_header(k, v)
        self.send_header("Content-Length", length if head and length else str(len(data)))
        self.end_headers()
        if head:
            return
        if cut is not None:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
