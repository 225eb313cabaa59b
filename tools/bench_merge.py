#!/usr/bin/env python3
"""Benchmark `nydusfs merge`.

  realistic   the layers of tools/make-images' realistic image (build it first with
              `tools/make-images realistic`): `create` each layer (timed), then `merge` them
              (timed), and print merge time against create time. With --verify, the merged
              image is compared with the umoci-unpacked reference tree of the same image.
  synthetic   N layer bootstraps generated in memory with the bootstrap writers (default 20
              layers, 200k inodes in total, with overrides, whiteouts, opaque directories,
              implicit parents, hard links, symlinks and xattrs); `nydusfs merge` runs in a
              child process so that its peak RSS can be measured.

--profile runs the merge in this process under cProfile and prints the top functions.
Wall times depend on what else the machine runs; CPU seconds are reported beside them.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pathlib
import pstats
import random
import resource
import stat
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nydusfs.write.bootstrap_v5 import write_v5  # noqa: E402
from nydusfs.write.bootstrap_v6 import write_v6  # noqa: E402
from nydusfs.format.v5 import ChunkInfo  # noqa: E402
from nydusfs.merge import MergeOptions, merge  # noqa: E402
from nydusfs.util.output import write_outputs  # noqa: E402
from nydusfs.tree.node import BlobDesc, Node, Tree, new_dir  # noqa: E402

CACHE = pathlib.Path(os.environ.get("NYDUSFS_BENCH_CACHE", REPO / "tools" / ".cache"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed_merge(sources: list[pathlib.Path], out: pathlib.Path, profile: bool = False) -> dict[str, float]:
    prof = cProfile.Profile() if profile else None
    start, cpu = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    result = merge(sources, MergeOptions())
    data = result.bootstrap()
    write_outputs([(str(out), data)])
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    timings = dict(result.timings)
    timings["total"] = time.perf_counter() - start
    timings["cpu"] = time.process_time() - cpu
    return timings


# --- realistic ----------------------------------------------------------------------------

def realistic(args: argparse.Namespace) -> dict:
    from nydusfs.create.pipeline import CreateOptions, create

    image = CACHE / "images" / "realistic"
    meta = json.loads((image / "image.json").read_text())
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-merge-", dir=args.workdir))
    layer_dir = work / "layers"
    layer_dir.mkdir()
    sources, create_s = [], 0.0
    for layer in meta["layers"]:
        out = layer_dir / layer["digest"].split(":", 1)[1]
        start = time.perf_counter()
        create(str(image / layer["path"]), CreateOptions(fs_version=args.fs_version, output=str(out)))
        took = time.perf_counter() - start
        create_s += took
        log(f"create layer {layer['index']} ({layer['entries']} entries): {took:.2f} s")
        sources.append(out)
    runs = [timed_merge(sources, work / "merged.boot", args.profile and i == 0) for i in range(args.repeat)]
    best = min(runs, key=lambda r: r["total"])
    report = {"scenario": "realistic", "fs_version": args.fs_version, "layers": len(sources),
              "entries": sum(layer["entries"] for layer in meta["layers"]),
              "create_s": round(create_s, 3), "merge_s": round(best["total"], 3),
              "merge_cpu_s": round(best["cpu"], 3),
              "merge_over_create": round(best["total"] / create_s, 4),
              "merge_breakdown": {k: round(v, 3) for k, v in best.items()}}
    if args.verify:
        report["verify_differences"] = verify(work / "merged.boot", [layer_dir], image / "ref" / "rootfs")
    return report


def verify(boot: pathlib.Path, blob_dirs: list[pathlib.Path], rootfs: pathlib.Path) -> list[str]:
    """Compare the merged image with an unpacked reference tree (type, mode, owner, size,
    symlink target, content digest, xattrs, hard-link groups); mtimes are left out because
    the reference unpacker does not keep them for every entry."""
    from nydusfs.reader import open_image

    diffs: list[str] = []
    want: dict[bytes, tuple] = {}
    groups: dict[tuple[int, int], list[bytes]] = {}
    root = os.fsencode(rootfs)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = full[len(root):]
            if not stat.S_ISDIR(st.st_mode):
                groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
            want[rel] = _describe_fs(full, st)
    with open_image(boot, blob_dirs) as image:
        got_groups: dict[object, list[bytes]] = {}
        for path, ino in image.walk():
            if path == b"/":
                continue
            n = image.inode(ino)
            if not n.is_dir:
                got_groups.setdefault(image.link_key(ino), []).append(path)
            content = hashlib.sha256(image.read(ino, 0, n.size)).hexdigest() if n.is_reg else None
            got = (stat.S_IFMT(n.mode), stat.S_IMODE(n.mode), n.uid, n.gid,
                   n.size if n.is_reg else None, image.readlink(ino) if n.is_symlink else None,
                   content, tuple(sorted(image.xattrs(ino))))
            exp = want.pop(path, None)
            if exp is None:
                diffs.append(f"{path!r}: only in the merged image")
            elif exp != got:
                diffs.append(f"{path!r}: merged {got[:6]}, reference {exp[:6]}")
    diffs += [f"{p!r}: only in the reference" for p in want]
    norm = lambda gs: sorted(tuple(sorted(g)) for g in gs if len(g) > 1)  # noqa: E731
    if norm(groups.values()) != norm(got_groups.values()):
        diffs.append("hard-link groups differ")
    return diffs


def _describe_fs(path: bytes, st: os.stat_result) -> tuple:
    content = None
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        content = h.hexdigest()
    xattrs = []
    for name in os.listxattr(path, follow_symlinks=False):
        if name.startswith(("user.", "trusted.", "security.")):
            xattrs.append((name.encode(), os.getxattr(path, name, follow_symlinks=False)))
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
            st.st_size if stat.S_ISREG(st.st_mode) else None,
            os.readlink(path) if stat.S_ISLNK(st.st_mode) else None, content, tuple(sorted(xattrs)))


# --- synthetic ----------------------------------------------------------------------------

CHUNK = 0x100000


class Synth:
    """Generates layer trees that overlay each other the way image layers do."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.files: list[tuple[bytes, ...]] = []      # file paths of lower layers
        self.dirs: list[tuple[bytes, ...]] = []

    def layer(self, index: int, count: int) -> Tree:
        rng = self.rng
        root = new_dir(0o755, implicit=True)
        made = 0
        chunks_total = 0
        blob_id = hashlib.sha256(b"synthetic layer %d" % index).hexdigest()

        def place(parts: tuple[bytes, ...], node: Node) -> None:
            nonlocal made
            d = root
            for p in parts[:-1]:
                nxt = d.children.get(p)  # type: ignore[union-attr]
                if nxt is None or nxt.children is None:
                    nxt = d.children[p] = new_dir(0o755, implicit=True)  # type: ignore[index]
                    made += 1
                d = nxt
            if parts[-1] not in d.children:  # type: ignore[operator]
                made += 1
            d.children[parts[-1]] = node  # type: ignore[index]

        def file(size: int) -> Node:
            nonlocal chunks_total
            chunks = []
            for off in range(0, size, CHUNK):
                n = min(CHUNK, size - off)
                chunks.append(ChunkInfo(rng.randbytes(32), 0, 1, n // 2 + 1, n,
                                        chunks_total * CHUNK, chunks_total * CHUNK, off,
                                        chunks_total, 0))
                chunks_total += 1
            xattrs = {b"user.synthetic": b"%d" % index} if rng.random() < 0.02 else {}
            return Node(mode=stat.S_IFREG | rng.choice((0o644, 0o755)), uid=rng.choice((0, 1000)),
                        mtime=1_700_000_000 + index, size=size, chunks=chunks, layer=index,
                        xattrs=xattrs)

        if index and self.files:
            # changes to lower layers: replaced files, whiteouts, opaque dirs, chmod of dirs
            for _ in range(count // 20):
                place(rng.choice(self.files), file(rng.randrange(1, 3 * CHUNK)))
            for _ in range(count // 50):
                victim = rng.choice(self.files)
                place(victim[:-1] + (b".wh." + victim[-1],), Node(mode=stat.S_IFREG | 0o600))
            for _ in range(max(1, count // 2000)):
                place(rng.choice(self.dirs) + (b".wh..wh..opq",), Node(mode=stat.S_IFREG | 0o600))
            for _ in range(count // 200):
                place(rng.choice(self.dirs), new_dir(0o750, mtime=1_700_000_000 + index))
        top = b"layer%d" % index
        while made < count:
            sub = (top, b"d%03d" % rng.randrange(count // 100 + 1), b"s%02d" % rng.randrange(10))
            name = b"f%06d" % made
            roll = rng.random()
            if roll < 0.05:
                place(sub + (name,), Node(mode=stat.S_IFLNK | 0o777, symlink=b"../" + name))
            elif roll < 0.08 and self.files:
                target = file(rng.randrange(0, 2 * CHUNK))
                place(sub + (name,), target)
                place(sub + (name + b".link",), target)
            else:
                path = sub + (name,)
                place(path, file(rng.randrange(0, 2 * CHUNK)))
                self.files.append(path)
            self.dirs.append(sub)
        self.dirs = list(dict.fromkeys(self.dirs))
        blob = BlobDesc(blob_id=blob_id, compressor="zstd", chunk_size=CHUNK,
                        chunk_count=chunks_total, compressed_size=chunks_total * CHUNK // 2,
                        uncompressed_size=chunks_total * CHUNK)
        return Tree(root=root, version=6, compressor="zstd", chunk_size=CHUNK,
                    blobs=[blob] if chunks_total else [])


def synthetic(args: argparse.Namespace) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-merge-", dir=args.workdir))
    synth = Synth(args.seed)
    sources = []
    start = time.perf_counter()
    for i in range(args.layers):
        tree = synth.layer(i, args.inodes // args.layers)
        tree.version = args.fs_version
        data = (write_v5 if args.fs_version == 5 else write_v6)(tree)[0]
        path = work / (tree.blobs[0].blob_id if tree.blobs else f"layer{i}")
        path.write_bytes(data)
        sources.append(path)
    log(f"generated {args.layers} layer bootstraps in {time.perf_counter() - start:.1f} s")
    out, report_path = work / "merged.boot", work / "merge.json"
    if args.profile:
        timings = timed_merge(sources, out, profile=True)
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nydusfs", "merge", "--bootstrap", str(out),
                        "--output-json", str(report_path), *map(str, sources)], check=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        timings = json.loads(report_path.read_text())["trace"] | {
            "total": wall, "cpu": usage.ru_utime + usage.ru_stime}
        rss_mib = usage.ru_maxrss / 1024
    doc = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"scenario": "synthetic", "fs_version": args.fs_version, "layers": args.layers,
            "inodes_generated": args.inodes, "merged_inodes": doc.get("inode_count"),
            "merge_s": round(timings["total"], 3), "merge_cpu_s": round(timings["cpu"], 3),
            "peak_rss_mib": round(rss_mib, 1),
            "merge_breakdown": {k: round(v, 3) for k, v in timings.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=("realistic", "synthetic"))
    p.add_argument("--fs-version", type=int, choices=(5, 6), default=6, help="default: 6")
    p.add_argument("--layers", type=int, default=20, help="synthetic: layer count (default: 20)")
    p.add_argument("--inodes", type=int, default=200_000,
                   help="synthetic: inodes over all layers (default: 200000)")
    p.add_argument("--seed", type=int, default=1, help="synthetic: generator seed (default: 1)")
    p.add_argument("--repeat", type=int, default=3, help="realistic: merge runs, best kept (default: 3)")
    p.add_argument("--verify", action="store_true",
                   help="realistic: compare the merged image with the umoci-unpacked reference")
    p.add_argument("--profile", action="store_true", help="cProfile the merge (in this process)")
    p.add_argument("--workdir", default=None, help="where to put temporary files (default: $TMPDIR)")
    args = p.parse_args()
    report = realistic(args) if args.scenario == "realistic" else synthetic(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
