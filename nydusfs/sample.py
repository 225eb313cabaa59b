"""The built-in sample image: three small OCI layer tars that exercise what real layers hold,
and `write_layout()`, the same image as an OCI image layout.

Layer 1 (base): directories, files of several chunk counts, symlinks, a hard-link group, devices,
a fifo, xattrs (security.capability included), setuid bits, large ids, nanosecond mtimes and a
name that is not UTF-8. Layer 2 (update): changes a file, deletes a file and a directory tree
with whiteouts, makes a directory opaque, turns a file into a directory, splits the hard-link
group. Layer 3 (app): many small files, some duplicating data of lower layers.
"""

from __future__ import annotations

import hashlib
import io
import tarfile

MTIME = "1700000000.123456789"


def _data(size: int, seed: int) -> bytes:
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d/%d" % (seed, n)).digest()
        n += 1
    return bytes(out[:size])


class _Tar:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT,
                               encoding="utf-8", errors="surrogateescape")

    def add(self, name: bytes | str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
            mode: int | None = None, uid: int = 0, gid: int = 0, link: str = "",
            dev: tuple[int, int] = (0, 0), xattrs: dict[str, bytes] | None = None) -> "_Tar":
        ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name)
        if mode is None:
            mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.type, ti.mode, ti.uid, ti.gid = kind, mode, uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = int(MTIME.split(".")[0])
        ti.pax_headers = {"mtime": MTIME}
        for k, v in (xattrs or {}).items():
            ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            self.tf.addfile(ti, io.BytesIO(data))
        else:
            self.tf.addfile(ti)
        return self

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def layers(version: int = 1) -> list[tuple[str, bytes]]:
    """(name, tar bytes) of each layer, lowest first. Version 2 adds a fourth layer (a changed
    file, a new file, a deleted file) on top of the same three, as an image update does."""
    base = _Tar()
    base.add("etc", tarfile.DIRTYPE, mode=0o755)
    base.add("etc/hostname", data=b"sample\n")
    base.add("etc/config.toml", data=b"[sample]\nvalue = 1\n" * 400)
    base.add("usr", tarfile.DIRTYPE).add("usr/bin", tarfile.DIRTYPE)
    base.add("usr/bin/tool", data=_data(3 * 1024 * 1024 + 17, 1), mode=0o4755,
             xattrs={"security.capability": bytes.fromhex("0100000200200000000000000000000000000000")})
    base.add("usr/bin/tool-link", tarfile.LNKTYPE, link="usr/bin/tool")
    base.add("usr/bin/alias", tarfile.SYMTYPE, link="tool", mode=0o777)
    base.add("usr/lib", tarfile.DIRTYPE).add("lib", tarfile.SYMTYPE, link="usr/lib", mode=0o777)
    base.add("usr/lib/libsample.so", data=_data(700_000, 2), mode=0o755)
    base.add("dev", tarfile.DIRTYPE).add("dev/null", tarfile.CHRTYPE, dev=(1, 3), mode=0o666)
    base.add("dev/sda", tarfile.BLKTYPE, dev=(8, 0), mode=0o660).add("dev/pipe", tarfile.FIFOTYPE)
    base.add("var", tarfile.DIRTYPE).add("var/cache", tarfile.DIRTYPE)
    for i in range(20):
        base.add(f"var/cache/entry-{i:02d}", data=_data(100 + i * 37, 100 + i))
    base.add("var/opaque", tarfile.DIRTYPE, xattrs={"user.origin": b"base"})
    base.add("var/opaque/old-1", data=b"old").add("var/opaque/old-2", data=b"old")
    base.add("home", tarfile.DIRTYPE).add("home/user", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000)
    base.add("home/user/notes.txt", data=b"notes\n", uid=1000, gid=1000, mode=0o600)
    base.add(b"home/user/caf\xe9-latin1.txt", data=b"not utf-8 name", uid=1000, gid=1000)
    base.add("srv", tarfile.DIRTYPE).add("srv/big-ids", data=b"ids", uid=3_000_000, gid=70_000)
    base.add("tmp", tarfile.DIRTYPE, mode=0o1777)

    update = _Tar()
    update.add("etc/hostname", data=b"sample-updated\n")
    update.add("var/cache/.wh.entry-03").add("var/.wh.opaque-gone-never-existed")
    update.add("var/opaque/.wh..wh..opq").add("var/opaque/new", data=b"after opaque\n")
    update.add("home/user/.wh.notes.txt")
    update.add("srv/big-ids", tarfile.DIRTYPE, mode=0o750)
    update.add("srv/big-ids/now-a-dir", data=b"file became a directory\n")
    update.add("usr/bin/tool", data=_data(1000, 3), mode=0o755)   # splits the link group
    update.add("lib/extra.so", data=_data(5000, 4))               # lands in usr/lib via the symlink

    app = _Tar()
    app.add("opt", tarfile.DIRTYPE).add("opt/app", tarfile.DIRTYPE)
    for i in range(200):
        app.add(f"opt/app/module_{i:03d}.py", data=(f"# module {i}\n" + "x = 1\n" * (i % 30)).encode())
    app.add("opt/app/copy-of-lib.so", data=_data(700_000, 2))    # same chunks as a lower file
    app.add("var/cache/.wh..wh..opq")
    app.add("var/cache/fresh", data=b"fresh cache\n")
    out = [("base", base.bytes()), ("update", update.bytes()), ("app", app.bytes())]
    if version >= 2:   # the next release: one more layer on the same three
        patch = _Tar()
        patch.add("etc/config.toml", data=b"[sample]\nvalue = 2\n" * 400)
        patch.add("opt/app/module_200.py", data=b"# module 200\n")
        patch.add("dev/.wh.pipe")
        out.append(("patch", patch.bytes()))
    return out


CONFIG = {
    "created": "2023-11-14T22:13:20.123456789Z",
    "architecture": "",           # filled with the host's, so the default --platform finds it
    "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "SAMPLE=1"],
               "Cmd": ["/usr/bin/tool"], "WorkingDir": "/opt/app", "Labels": {"sample": "nydusfs"}},
    "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "sample layer " + n} for n in
                ("base", "update", "app", "patch")],
}


def write_layout(directory: str, tag: str = "latest", version: int = 1) -> str:
    """The sample as an OCI image layout (gzip layers, as a registry serves them); returns the
    reference oci:DIRECTORY:TAG. Deterministic: the same bytes every time."""
    import gzip
    import json
    import os

    from .image.manifest import host_platform
    from .image.media import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST

    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    layer_descs, diff_ids = [], []
    for _name, raw in layers(version):
        layer_descs.append(put(gzip.compress(raw, mtime=0), OCI_LAYER_GZIP))
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = json.loads(json.dumps(CONFIG))
    config["architecture"] = host_platform().architecture
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = config["history"][:len(diff_ids)]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": put(json.dumps(config).encode(), OCI_CONFIG), "layers": layer_descs}
    entry = put(json.dumps(manifest).encode(), OCI_MANIFEST)
    entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    index_path = os.path.join(directory, "index.json")
    entries = []
    if os.path.exists(index_path):   # another tag of the same layout: keep the others
        with open(index_path) as f:
            entries = [e for e in json.load(f).get("manifests", [])
                       if e.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    with open(index_path, "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries + [entry]}, f)
    return f"oci:{directory}:{tag}"
