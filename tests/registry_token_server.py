#!/usr/bin/env python3
"""A small token server for the registry tests (the distribution "token" auth scheme).

It answers `GET /token?service=S&scope=repository:R:pull,push` (Basic credentials in the
Authorization header) and `POST /token` (an OAuth2 form: grant_type=password, username,
password, service, scope) with a JWT signed by a test key whose certificate the registry
trusts (`rootcertbundle`). Tokens are short-lived on purpose (`--ttl`), so clients must renew.

Run as a process (`--port 0` prints the chosen port on stdout's first line); every request is
appended to `--log` as one JSON line, so tests can count token requests per method.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key: rsa.RSAPrivateKey, cert: x509.Certificate, claims: dict) -> str:
    header = {"typ": "JWT", "alg": "RS256",
              "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode()))
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def jwt_claims(token: str) -> dict:
    """The claims of a token (no signature check: the registry does that)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class TokenServer:
    def __init__(self, key_file: str, cert_file: str, *, issuer: str, service: str, ttl: int,
                 users: dict[str, str], methods: set[str], log: str | None) -> None:
        with open(key_file, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        with open(cert_file, "rb") as f:
            self.cert = x509.load_pem_x509_certificate(f.read())
        self.issuer, self.service, self.ttl = issuer, service, ttl
        self.users, self.methods = users, methods
        self.log_path = log
        self.log_lock = threading.Lock()

    def issue(self, account: str, scopes: list[str]) -> dict:
        now = int(time.time())
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) >= 3 and parts[0] == "repository":
                name = ":".join(parts[1:-1])
                access.append({"type": "repository", "name": name,
                               "actions": [a for a in parts[-1].split(",") if a in ("pull", "push")]})
        claims = {"iss": self.issuer, "sub": account, "aud": self.service, "exp": now + self.ttl,
                  "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = make_jwt(self.key, self.cert, claims)  # type: ignore[arg-type]
        # both names, as registries differ in which one they send
        return {"token": token, "access_token": token, "expires_in": self.ttl,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def record(self, entry: dict) -> None:
        if self.log_path:
            with self.log_lock, open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def answer(self, method: str, params: dict[str, list[str]], user: str | None,
                   password: str | None) -> None:
            server.record({"method": method, "scope": params.get("scope", []), "user": user})
            if method not in server.methods:
                self.reply(405, {"errors": [{"code": "UNSUPPORTED", "message": method}]})
                return
            if server.users:
                if user is None or server.users.get(user) != password:
                    self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                 "message": "bad credentials"}]})
                    return
            if params.get("service", [""])[0] != server.service:
                self.reply(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
                return
            scopes = [s for v in params.get("scope", []) for s in v.split(" ") if s]
            self.reply(200, server.issue(user or "anonymous", scopes))

        def basic(self) -> tuple[str | None, str | None]:
            value = self.headers.get("Authorization", "")
            if not value.lower().startswith("basic "):
                return None, None
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
            return user, password

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.reply(404, {})
                return
            self.answer("GET", urllib.parse.parse_qs(url.query), *self.basic())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            if urllib.parse.urlsplit(self.path).path != "/token":
                self.reply(404, {})
                return
            user, password = self.basic()
            if "username" in form:
                user, password = form["username"][0], form.get("password", [""])[0]
            self.answer("POST", form, user, password)

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--issuer", default="nydusfs-test-issuer")
    p.add_argument("--service", default="nydusfs-test-registry")
    p.add_argument("--ttl", type=int, default=60)
    p.add_argument("--user", action="append", default=[], help="USER:PASSWORD allowed")
    p.add_argument("--methods", default="GET,POST")
    p.add_argument("--log")
    a = p.parse_args(argv)
    users = dict(u.split(":", 1) for u in a.user)
    ts = TokenServer(a.key, a.cert, issuer=a.issuer, service=a.service, ttl=a.ttl, users=users,
                     methods=set(a.methods.split(",")), log=a.log)
    httpd = ThreadingHTTPServer(("127.0.0.1", a.port), handler_for(ts))
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    sys.stdout.close()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
