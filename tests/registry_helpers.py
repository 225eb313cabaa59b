"""A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.

Three configurations, each a real process with its own temporary storage and config file:

* ``anon``: anonymous over plain HTTP;
* ``basic``: htpasswd Basic auth over TLS, with a CA made here (``cryptography``);
* ``token``: bearer tokens from ``tests/registry_token_server.py`` (JWTs signed by a test key the
  registry trusts), short-lived.

`start_registry()` is used by the pytest fixtures (tests/registry_fixtures.py) and by ``tools/registry`` for people.
`make_layout()` writes a small OCI layout with Python and `skopeo_push()` copies it in with
skopeo, an independent client.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HERE = pathlib.Path(__file__).resolve().parent
REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER, PASSWORD = "tester", "s3cret-pass"
SERVICE, ISSUER = "nydusfs-test-registry", "nydusfs-test-issuer"


def _die_with_parent() -> None:
    """Servers started by a test go when the test process goes, however it ends."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- keys and certificates ---------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: pathlib.Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name | None,
          issuer_key: rsa.RSAPrivateKey, *, ca: bool, san: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_tls(dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and a separate
    self-signed token-signing certificate. Returns the file paths."""
    dir.mkdir(parents=True, exist_ok=True)
    ca_key, srv_key, tok_key = _key(), _key(), _key()
    ca = _cert("nydusfs test CA", ca_key, None, ca_key, ca=True, san=False)
    srv = _cert("127.0.0.1", srv_key, ca.subject, ca_key, ca=False, san=True)
    tok = _cert("nydusfs test token signer", tok_key, None, tok_key, ca=False, san=False)
    files = {"ca": dir / "ca.crt", "cert": dir / "server.cert", "key": dir / "server.key",
             "token_cert": dir / "token.pem", "token_key": dir / "token.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    _write_key(srv_key, files["key"])
    files["token_cert"].write_bytes(tok.public_bytes(serialization.Encoding.PEM))
    _write_key(tok_key, files["token_key"])
    return files


# --- the registry ------------------------------------------------------------------------------

@dataclasses.dataclass
class Registry:
    kind: str                       # anon | basic | token
    dir: pathlib.Path
    port: int
    proc: subprocess.Popen | None = None
    token_proc: subprocess.Popen | None = None
    token_port: int = 0
    tls: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
    detached: bool = False          # tools/registry: outlive the starting process

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _preexec(self):  # type: ignore[no-untyped-def]
        return None if self.detached else _die_with_parent

    @property
    def scheme(self) -> str:
        return "https" if self.kind == "basic" else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def storage(self) -> pathlib.Path:
        return self.dir / "storage"

    @property
    def cert_dir(self) -> pathlib.Path:
        """A containers-style certs.d directory: the CA as ca.crt."""
        return self.dir / "tls"

    @property
    def log_file(self) -> pathlib.Path:
        return self.dir / "registry.log"

    @property
    def token_log(self) -> pathlib.Path:
        return self.dir / "token.log"

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls["ca"])) if self.tls else None

    def creds(self) -> str | None:
        return f"{USER}:{PASSWORD}" if self.kind in ("basic", "token") else None

    def options(self) -> dict[str, object]:
        """open_source/open_target options that reach this registry."""
        opts: dict[str, object] = {}
        if self.creds():
            opts["creds"] = self.creds()
        if self.kind == "basic":
            opts["cert_dir"] = str(self.cert_dir)
        return opts

    def skopeo_args(self, direction: str) -> list[str]:
        """skopeo's flags for this registry, direction 'src', 'dest' or '' (inspect)."""
        pre = f"--{direction}-" if direction else "--"
        args = []
        if self.creds():
            args.append(f"{pre}creds={self.creds()}")
        if self.kind == "basic":
            args.append(f"{pre}cert-dir={self.cert_dir}")
        else:
            args.append(f"{pre}tls-verify=false")
        return args

    def config(self) -> str:
        lines = ["version: 0.1",
                 "log:", "  level: info", "  formatter: text",
                 "storage:", f"  filesystem: {{rootdirectory: {self.storage}}}",
                 "  delete: {enabled: true}",
                 "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: nydusfs-test-secret"]
        if self.kind == "basic":
            lines += ["  tls:", f"    certificate: {self.tls['cert']}", f"    key: {self.tls['key']}",
                      "auth:", "  htpasswd:", "    realm: nydusfs-test",
                      f"    path: {self.dir / 'htpasswd'}"]
        if self.kind == "token":
            lines += ["auth:", "  token:",
                      f"    realm: http://127.0.0.1:{self.token_port}/token",
                      f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                      f"    rootcertbundle: {self.tls['token_cert']}"]
        return "\n".join(lines) + "\n"

    def start(self, *, token_ttl: int = 60, token_methods: str = "GET,POST") -> None:
        if self.kind in ("basic", "token") and not self.tls:
            self.tls = make_tls(self.dir / "keys")
            self.cert_dir.mkdir(exist_ok=True)
            shutil.copy(self.tls["ca"], self.cert_dir / "ca.crt")
        if self.kind == "basic" and not (self.dir / "htpasswd").exists():
            out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                 capture_output=True, text=True).stdout
            (self.dir / "htpasswd").write_text(out)
        if self.kind == "token" and self.token_proc is None:
            self.start_token_server(token_ttl, token_methods)
        (self.dir / "config.yml").write_text(self.config())
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=self._preexec)
        self.wait_ready()

    def start_token_server(self, ttl: int = 60, methods: str = "GET,POST") -> None:
        """(Re)start the token server on its port, e.g. with other methods or lifetimes."""
        if self.token_proc is not None:
            self.token_proc.terminate()
            self.token_proc.wait(10)
        self.token_proc = subprocess.Popen(
            [sys.executable, str(HERE / "registry_token_server.py"), "--port",
             str(self.token_port), "--key", str(self.tls["token_key"]), "--cert",
             str(self.tls["token_cert"]), "--issuer", ISSUER, "--service", SERVICE,
             "--ttl", str(ttl), "--user", f"{USER}:{PASSWORD}", "--methods", methods,
             "--log", str(self.token_log)],
            stdout=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=self._preexec)
        assert self.token_proc.stdout is not None
        self.token_port = int(self.token_proc.stdout.readline())

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        ctx = self.ssl_context()
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=ctx)
                return
            except urllib.error.HTTPError:
                return  # 401: up and asking for credentials
            except (OSError, urllib.error.URLError):
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry exited:\n{self.log_file.read_text()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"registry not ready:\n{self.log_file.read_text()}") from None
                time.sleep(0.05)

    def stop_registry(self) -> None:
        """Stop the registry process only (the token server stays): a registry that is down."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop_registry()
        self.start()

    def stop(self) -> None:
        self.stop_registry()
        if self.token_proc is not None:
            self.token_proc.terminate()
            self.token_proc.wait(10)
            self.token_proc = None

    def token_requests(self) -> list[dict]:
        if not self.token_log.exists():
            return []
        return [json.loads(line) for line in self.token_log.read_text().splitlines()]


def start_registry(kind: str, dir: pathlib.Path, *, detached: bool = False,
                   **kw: object) -> Registry:
    dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        reg = Registry(kind, dir, free_port(), detached=detached)
        try:
            reg.start(**kw)  # type: ignore[arg-type]
            return reg
        except RuntimeError:
            reg.stop()
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


# --- test images -------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_layout(dir: pathlib.Path, layers: list[bytes], tag: str = "latest") -> dict[str, str]:
    """An OCI image layout with these (uncompressed tar) layers. Returns digests."""
    blobs = dir / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        d = _sha(data)
        (blobs / d[7:]).write_bytes(data)
        return d

    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(layer),
              "size": len(layer)} for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
                         "config": {}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": descs}).encode()
    mdigest = put(manifest)
    (dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dir / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
            "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return {"manifest": mdigest, "config": _sha(config),
            "layers": ",".join(d["digest"] for d in descs)}


def skopeo_push(layout: pathlib.Path, reg: Registry, repo: str, tag: str = "latest") -> None:
    subprocess.run(["skopeo", "copy", "--quiet", *reg.skopeo_args("dest"), "--preserve-digests",
                    f"oci:{layout}:{tag}", f"docker://{reg.host}/{repo}:{tag}"],
                   check=True, capture_output=True, timeout=120)


@dataclasses.dataclass
class PushedImage:
    repo: str
    tag: str
    digests: dict[str, str]
    layers: list[bytes]

    @property
    def layer_digests(self) -> list[str]:
        return self.digests["layers"].split(",")


def push_test_image(reg: Registry, tmp: pathlib.Path, repo: str = "test/app",
                    tag: str = "v1", seed: int = 1, big: int = 3 << 20) -> PushedImage:
    """Two layers: one with a big incompressible file (range reads), one small."""
    rnd = hashlib.sha256(str(seed).encode()).digest()
    blob = b"".join(hashlib.sha256(rnd + i.to_bytes(4, "big")).digest()
                    for i in range(big // 32 + 1))[:big]
    layers = [layer_tar({"data/big.bin": blob}),
              layer_tar({"etc/hostname": b"nydusfs\n", "etc/motd": b"hello %d\n" % seed})]
    layout = tmp / f"layout-{seed}"
    digests = make_layout(layout, layers, tag)
    skopeo_push(layout, reg, repo, tag)
    return PushedImage(repo, tag, digests, layers)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
