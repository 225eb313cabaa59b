"""One source layer -> one Nydus blob (a layer file of layout B: data, blob meta, chunk
digests, the layer's bootstrap and the ToC), streamed from the source into a worker process
running `create` (worker.py), never untarred; the file is named by its sha256, which becomes the
blob id and the layer digest (spec image.md §3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..image.manifest import Descriptor
from ..image.source import ImageError, ImageSource
from .options import ConvertOptions


@dataclasses.dataclass
class LayerResult:
    source: Descriptor
    digest: str              # sha256:<hex> of the Nydus blob
    size: int
    path: str                # the blob file, named by its hex digest
    entries: int
    input_bytes: int         # bytes of the source layer read (compressed as stored)
    seconds: float
    cached: bool


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _identity(path: str) -> list[int]:
    """What changes when a cached blob file is rewritten: size, mtime, inode."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def cached(cache: str, key: str, layer: Descriptor) -> LayerResult | None:
    record = os.path.join(cache, "layers", key + ".json")
    try:
        with open(record, encoding="utf-8") as f:
            doc = json.load(f)
        path = os.path.join(cache, "blobs", doc["digest"][7:])
        if _identity(path) != doc.get("file"):  # changed or replaced since it was recorded
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return LayerResult(layer, doc["digest"], doc["size"], path, doc["entries"], 0, 0.0, True)


def convert_layer(source: ImageSource, layer: Descriptor, opts: ConvertOptions, cache: str,
                  key: str, chunk_dict: str | None, tick: Callable[[int], None],
                  workers: int, running: tuple[set, threading.Lock, threading.Event]) -> LayerResult:
    """`running`: the set of live worker processes (with its lock and the stop event), so that
    a failing or interrupted convert can kill them all."""
    if opts.use_cache:
        hit = cached(cache, key, layer)
        if hit is not None:
            tick(layer.size)
            return hit
    t0 = time.monotonic()
    blobs = os.path.join(cache, "blobs")
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(os.path.join(cache, "layers"), exist_ok=True)
    tmp = os.path.join(blobs, f".{layer.hex}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    what = f"{source.reference}: layer {layer.digest}"
    options = {"name": what, "fs_version": opts.fs_version, "compressor": opts.compressor,
               "digester": "blake3", "chunk_size": opts.chunk_size, "whiteout_spec": "none",
               "chunk_dict": chunk_dict, "prefetch_policy": "fs",
               "prefetch_patterns": [p.hex() for p in opts.prefetch_patterns], "layout": "B",
               "output": tmp, "workers": workers}
    try:
        entries = _run_worker(source, layer, options, tick, what, running)
        digest = hash_file(tmp)
        path = os.path.join(blobs, digest[7:])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    size = os.path.getsize(path)
    record = os.path.join(cache, "layers", key + ".json")
    with open(record + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"digest": digest, "size": size, "entries": entries, "source": layer.digest,
                   "file": _identity(path)}, f)
    os.replace(record + ".tmp", record)
    return LayerResult(layer, digest, size, path, entries, layer.size, time.monotonic() - t0, False)


def _run_worker(source: ImageSource, layer: Descriptor, options: dict, tick: Callable[[int], None],
                what: str, running: tuple[set, threading.Lock, threading.Event]) -> int:
    """Stream the layer into a worker process running `create`; its inode count."""
    procs, lock, stop = running
    with lock:
        if stop.is_set():
            raise ImageError(f"{what}: stopped")
        # its own process group: a Ctrl-C reaches the parent, which then stops the workers
        proc = subprocess.Popen([sys.executable, "-m", "nydusfs.convert.worker", json.dumps(options)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        procs.add(proc)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    err: list[bytes] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    drain.start()
    try:
        try:
            with source.open_blob(layer.digest) as raw:  # read to the end: digest checked
                while chunk := raw.read(1 << 20):
                    proc.stdin.write(chunk)
                    tick(len(chunk))
        except BrokenPipeError:
            pass  # the worker stopped early: its message says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        out = proc.stdout.read()
        status = proc.wait()
        drain.join()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with lock:
            procs.discard(proc)
    if stop.is_set():
        raise ImageError(f"{what}: stopped")
    message = b"".join(err).decode(errors="replace").strip()
    if status != 0:
        line = message.splitlines()[-1] if message else f"worker exit status {status}"
        if status == 130:
            raise KeyboardInterrupt
        raise ImageError(line if line.startswith(what) else f"{what}: {line}")
    return int(json.loads(out)["inodes"])
