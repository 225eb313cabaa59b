"""The control channel of a running mount: a Unix socket beside its pid file (`nydusfs stats`).

Protocol (version 1): the client connects and sends one JSON object on one line of at most
REQUEST_MAX bytes, `{"request": "stats"}`; the server answers one JSON object on one line and
closes the connection. An answer is either `{"error": "..."}` or the stats document
(docs/stats.md). Only the server's own user and root are answered (SO_PEERCRED); the socket
is mode 0600.

The socket is created (under a temporary name, then renamed into place) once the mount is
ready and removed when the server stops; the trio loop serves it (serve.py). This module
imports neither pyfuse3 nor trio, so `nydusfs stats` starts quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from ..errors import MountError, NydusfsError

PROTOCOL = 1
REQUEST_MAX = 4096
ANSWER_MAX = 256 << 20         # the client's bound on an answer (100k paths fit many times over)
SUN_PATH_MAX = 107             # bytes of a socket path the kernel takes (sun_path, NUL excluded)
NAME_MAX_SOCKET = 64           # longer socket names are hashed, so /proc/self/fd/N/NAME fits


@dataclasses.dataclass(frozen=True)
class Control:
    """Where a mount's control socket goes, and what it says the mount serves."""
    path: str
    image: str
    mountpoint: str


def socket_path(pid_file: str) -> str:
    """The control socket of the mount whose pid file is `pid_file`: beside it, same stem."""
    stem = pid_file[:-4] if pid_file.endswith(".pid") else pid_file
    head, name = os.path.split(stem + ".sock")
    if len(os.fsencode(name)) > NAME_MAX_SOCKET:
        digest = hashlib.sha256(os.fsencode(pid_file)).hexdigest()[:32]
        name = f"control-{digest}.sock"
    return os.path.join(head, name)


@contextlib.contextmanager
def _address(path: str) -> Iterator[str]:
    """`path` as the kernel takes it: through /proc/self/fd/N when the directory is too long."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield path
        return
    head, name = os.path.split(path)
    fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


# --- server side (sockets only; the loop is in serve.py) ----------------------------------------

def listen(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at `path`, mode 0600, replacing a stale one; and its identity
    (st_dev, st_ino), so that only this very socket is removed at the end."""
    tmp = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        old = os.umask(0o177)        # never reachable by others, not even for a moment
        try:
            with _address(tmp) as where:
                sock.bind(where)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        sock.listen(8)
        os.replace(tmp, path)
        st = os.stat(path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return sock, (st.st_dev, st.st_ino)


def remove(path: str, ident: tuple[int, int]) -> None:
    """Remove the socket if it is still ours (a newer mount may have replaced it)."""
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


def peer_allowed(sock: Any) -> bool:
    """The peer runs as this server's user, or as root."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", raw)
    return uid in (0, os.geteuid())


def parse_request(data: bytes) -> str:
    """The request named by the client's line; raises ValueError with what is wrong."""
    line, sep, _ = data.partition(b"\n")
    if not sep:
        raise ValueError(f"expected one JSON line of at most {REQUEST_MAX} bytes")
    try:
        doc = json.loads(line)
    except ValueError:
        raise ValueError("the request is not JSON") from None
    if not isinstance(doc, dict) or doc.get("request") != "stats":
        raise ValueError('expected {"request": "stats"}')
    return "stats"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


# --- the stats document --------------------------------------------------------------------------

@dataclasses.dataclass
class Snapshot:
    """The counters of a mount at one moment, copied in the trio thread (cheap); `document`
    then does the slow part (paths, the registry's counters) in a worker thread."""
    taken: float
    started: float
    first_reads: list[tuple[int, float]]
    read_requests: int
    read_bytes: int
    faults: int


def snapshot(ops: Any) -> Snapshot:
    return Snapshot(time.monotonic(), ops.started, list(ops.first_reads.items()),
                    ops.read_requests, ops.read_bytes, ops.faults.count())


def document(snap: Snapshot, image: Any, control: Control, paths: dict[int, bytes],
             cap: int) -> dict[str, Any]:
    """The stats document (docs/stats.md). `paths` caches inode -> path across requests."""
    _resolve_paths(image, [ino for ino, _ in snap.first_reads], paths)
    store = image.blob_store
    local = store.stats() if store is not None else {}
    source_stats = getattr(getattr(image, "source", None), "stats", None)
    remote = source_stats() if callable(source_stats) else None
    remote_blobs: dict[str, Any] = dict(remote["blobs"]) if remote else {}
    blobs = []
    for index, info in enumerate(image.blobs):
        counts = local.get(index, {"reads": 0, "bytes": 0, "chunk_hits": 0, "chunk_misses": 0,
                                   "errors": 0})
        row: dict[str, Any] = {"index": index, "blob_id": info.blob_id, **counts}
        if remote is not None:
            row["registry"] = remote_blobs.pop("sha256:" + info.blob_id, None) or _no_requests()
        blobs.append(row)
    for digest, counts in sorted(remote_blobs.items()):   # bootstrap layer, config
        blobs.append({"index": None, "blob_id": digest.removeprefix("sha256:"), "registry": counts})
    files = [{"path": None if ino not in paths else os.fsdecode(paths[ino]), "ino": ino,
              "seconds": round(t, 6)} for ino, t in snap.first_reads]
    totals: dict[str, Any] = {
        "read_requests": snap.read_requests, "read_bytes": snap.read_bytes,
        "files_read": len(files), "faults": snap.faults,
        **{k: sum(c[k] for c in local.values())
           for k in ("reads", "bytes", "chunk_hits", "chunk_misses", "errors")},
    }
    if remote is not None:
        rows = [b["registry"] for b in blobs]
        totals["registry"] = {"requests": remote["requests"], "retries": remote["retries"],
                              "bytes": sum(r.get("bytes", 0) for r in rows),
                              "errors": sum(r.get("errors", 0) for r in rows)}
    return {"protocol": PROTOCOL, "pid": os.getpid(), "mountpoint": control.mountpoint,
            "image": control.image, "seconds": round(snap.taken - snap.started, 6),
            "registry": remote is not None, "totals": totals, "blobs": blobs,
            "first_reads": files, "first_reads_cap": cap,
            "first_reads_truncated": len(files) >= cap}


def _no_requests() -> dict[str, int]:
    return {"requests": 0, "bytes": 0, "retries": 0, "errors": 0}


def _resolve_paths(image: Any, inos: list[int], paths: dict[int, bytes]) -> None:
    """Find a path for every inode of `inos` not in `paths`, with one walk of the tree that
    stops once all are found. Hard links: any one of the file's names."""
    want = {ino for ino in inos if ino not in paths}
    if not want:
        return
    try:
        links = {image.link_key(ino): ino for ino in want if image.inode(ino).nlink > 1}
        for path, ino in image.walk():
            if ino not in want and links:
                node = image.inode(ino)
                if node.nlink > 1 and not node.is_dir:
                    ino = links.get(image.link_key(ino), ino)
            if ino in want:
                paths[ino] = path
                want.discard(ino)
                if not want:
                    return
    except NydusfsError:
        pass        # a corrupt tree: the files not reached yet keep no path


# --- client side ------------------------------------------------------------------------------

def ask(path: str, mountpoint: str, timeout: float) -> dict[str, Any]:
    """The stats document from the server listening at `path`; MountError when there is none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            with _address(path) as where:
                sock.connect(where)
        except (FileNotFoundError, ConnectionRefusedError):
            raise MountError(f"{mountpoint}: its server does not answer (no control socket at "
                             f"{path}; the server has stopped, or is not a version with one)"
                             ) from None
        except OSError as e:
            raise MountError(f"{mountpoint}: cannot reach its server at {path}: {e.strerror or e}"
                             ) from None
        data = bytearray()
        try:
            sock.sendall(encode({"request": "stats"}))
            while not data.endswith(b"\n"):
                part = sock.recv(1 << 20)
                if not part:
                    break
                data += part
                if len(data) > ANSWER_MAX:
                    raise MountError(f"{mountpoint}: the answer of its server at {path} is larger "
                                     f"than {ANSWER_MAX} bytes")
        except TimeoutError:
            raise MountError(f"{mountpoint}: its server at {path} did not answer within "
                             f"{timeout:g} s") from None
        except OSError as e:
            raise MountError(f"{mountpoint}: the connection to its server at {path} failed: "
                             f"{e.strerror or e}") from None
    finally:
        sock.close()
    try:
        doc = json.loads(bytes(data))
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise MountError(f"{mountpoint}: its server at {path} answered no stats document "
                         f"({len(data)} bytes that are not one JSON object)")
    if "error" in doc:
        raise MountError(f"{mountpoint}: its server refused: {doc['error']}")
    if doc.get("protocol") != PROTOCOL or doc.get("mountpoint") != mountpoint:
        raise MountError(f"{mountpoint}: the server at {path} answers protocol "
                         f"{doc.get('protocol')!r} for mountpoint {doc.get('mountpoint')!r}; "
                         f"expected protocol {PROTOCOL} for {mountpoint}")
    return doc
