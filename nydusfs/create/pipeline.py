"""`create`: one OCI layer tar -> one Nydus layer (blob + bootstrap), RAFS v5 or v6.

Everything is written to temporary files next to the targets and renamed at the end, so a
failed build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tarfile
import time
from typing import Any, BinaryIO, Callable, cast

from ..errors import LayerError, UsageError
from ..format.blob import (COMPRESSOR_IDS, DEFAULT_CHUNK_SIZE, PLACEHOLDER_BLOB_ID, TAR_BLOCK, TOC_FLAGS,
                           compress, valid_chunk_size)
from ..format.choices import (FS_VERSIONS, WRITABLE_COMPRESSORS, Compressor, Digester, LayerFileLayout,
                              PrefetchPolicy, WhiteoutSpec)
from ..format.flags import BlobFeatures, SuperFlags
from ..format.layer import LAYOUT_A_BLOB_OFFSET, LAYOUT_A_MAX_BLOB
from ..format.v5 import ChunkInfo
from ..format.record import align
from ..tree.node import BlobDesc, Node, Tree, non_directories
from ..util.limits import NotRegularFileError, open_regular
from ..util.output import Outputs
from ..util.streams import open_decompressed
from ..write.blobfile import BlobFile, ci_v1, meta_header, sha256, toc_entry
from ..write.bootstrap_v5 import write_v5
from ..write.bootstrap_v6 import write_v6
from .chunker import OWN_BLOB, Chunker, DictChunks
from .layer_tree import LayerTree, overlayfs_to_oci
from .tarstream import TarStream



@dataclasses.dataclass
class CreateOptions:
    fs_version: int = 6
    compressor: str = Compressor.ZSTD
    digester: str = Digester.BLAKE3
    chunk_size: int = DEFAULT_CHUNK_SIZE
    whiteout_spec: str = WhiteoutSpec.OCI
    blob_offset: int | None = None
    chunk_dict: str | None = None
    prefetch_policy: str = PrefetchPolicy.NONE
    prefetch_patterns: list[bytes] = dataclasses.field(default_factory=list)
    aligned_chunk: bool = False
    layout: str = LayerFileLayout.A
    output: str | None = None          # a Nydus layer file
    bootstrap: str | None = None       # or separate outputs
    blob: str | None = None
    blob_dir: str | None = None
    workers: int | None = None


@dataclasses.dataclass
class CreateResult:
    fs_version: int
    compressor: str
    digester: str
    layout: str
    output: str | None
    bootstrap: str | None
    blob: str | None
    blob_id: str | None
    blob_size: int
    chunk_count: int
    dedup_hits: int
    inode_count: int
    bootstrap_size: int
    input_bytes: int
    stored_bytes: int
    blobs: list[str]
    warnings: list[str]
    timings: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "version": __version__, "fs_version": str(self.fs_version), "compressor": self.compressor,
            "digester": self.digester, "layout": self.layout, "output": self.output,
            "bootstrap": self.bootstrap, "blob": self.blob,
            "blob_id": self.blob_id, "blob_size": self.blob_size, "chunk_count": self.chunk_count,
            "dedup_hits": self.dedup_hits, "inode_count": self.inode_count,
            "bootstrap_size": self.bootstrap_size, "file_bytes": self.input_bytes,
            "stored_bytes": self.stored_bytes, "blobs": self.blobs, "warnings": self.warnings,
            "timings": self.timings,
        }


def validate(opts: CreateOptions) -> None:
    if opts.fs_version not in FS_VERSIONS:
        raise UsageError(f"--fs-version must be 5 or 6, not {opts.fs_version}")
    Compressor.parse("--compressor", opts.compressor, WRITABLE_COMPRESSORS)
    Digester.parse("--digester", opts.digester)
    if not valid_chunk_size(opts.chunk_size):
        raise UsageError(f"--chunk-size must be a power of two between 0x1000 and 0x1000000, "
                         f"not 0x{opts.chunk_size:x}")
    WhiteoutSpec.parse("--whiteout-spec", opts.whiteout_spec)
    PrefetchPolicy.parse("--prefetch-policy", opts.prefetch_policy)
    separate = bool(opts.bootstrap or opts.blob or opts.blob_dir)
    if opts.output and separate:
        raise UsageError("give either -o OUT (a Nydus layer file) or --bootstrap/--blob/--blob-dir")
    if not opts.output and not separate:
        raise UsageError("no output: give -o OUT, or --bootstrap FILE with --blob FILE or --blob-dir DIR")
    if separate and not opts.bootstrap:
        raise UsageError("--blob/--blob-dir need --bootstrap FILE as well")
    if separate and not (opts.blob or opts.blob_dir):
        raise UsageError("--bootstrap needs --blob FILE or --blob-dir DIR for the data")
    if opts.blob and opts.blob_dir:
        raise UsageError("give --blob FILE or --blob-dir DIR, not both")
    LayerFileLayout.parse("--layout", opts.layout)
    if opts.output and opts.layout == LayerFileLayout.A and opts.blob_offset not in (None, LAYOUT_A_BLOB_OFFSET):
        raise UsageError("layout A puts the blob at offset 1024; --blob-offset cannot change that")
    if opts.layout == LayerFileLayout.B and opts.output and opts.blob_offset:
        raise UsageError("layout B starts the blob at offset 0; --blob-offset does not apply")
    if opts.blob_offset is not None and opts.blob_offset < 0:
        raise UsageError("--blob-offset must not be negative")
    if opts.aligned_chunk and opts.blob_offset and opts.compressor == Compressor.NONE and opts.fs_version == 6:
        raise UsageError("--aligned-chunk lays the blob out for the kernel, which needs --blob-offset 0")


def load_chunk_dict(path: str, opts: CreateOptions) -> DictChunks:
    from ..reader import open_image
    from ..tree.load import blob_desc

    out = DictChunks()
    with open_image(path) as image:
        if image.version != opts.fs_version:
            raise UsageError(f"chunk dict {path} is RAFS v{image.version}, the build is v{opts.fs_version}")
        if image.chunk_size != opts.chunk_size or image.digester != opts.digester:
            raise UsageError(f"chunk dict {path} has chunk size 0x{image.chunk_size:x} and digester "
                             f"{image.digester}; the build uses 0x{opts.chunk_size:x} and {opts.digester}")
        out.blobs = [blob_desc(b) for b in image.blobs]
        for _path, ino in image.walk():
            if image.inode(ino).is_reg:
                for c in image.chunks(ino):
                    out.by_digest.setdefault(c.block_id, (c.blob_index, c))
    return out


def read_input(source: str) -> tuple[BinaryIO, int | None, Callable[[], int]]:
    """(decompressed stream, compressed size or None, bytes-consumed-so-far callback)."""
    if source == "-":
        # unbuffered: a buffered read of a pipe loops in C over partial reads, and a SIGTERM
        # that arrives during that loop would only be seen after the next read returns
        raw: BinaryIO = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        total = None
    else:
        try:
            raw = open(open_regular(source, "a layer"), "rb", buffering=0)
        except OSError as e:
            raise LayerError(source, f"cannot open: {e.strerror}") from None
        except NotRegularFileError as e:
            raise LayerError(source, e.detail) from None
        total = os.fstat(raw.fileno()).st_size
    counter = _Counting(raw, source)
    return open_decompressed(counter), total, lambda: counter.count  # type: ignore[arg-type]


class _Counting:
    """Counts the bytes read; a read error (EIO from a disk or from /proc/self/mem) names the
    layer and the offset, whichever decoder is reading."""

    def __init__(self, raw: BinaryIO, source: str) -> None:
        self.raw = raw
        self.source = source
        self.count = 0

    def readable(self) -> bool:
        return True

    def _failed(self, e: OSError) -> LayerError:
        return LayerError(self.source, f"cannot read: {e.strerror or e}", offset=self.count)

    def readinto(self, b: Any) -> int:
        try:
            n = self.raw.readinto(b)  # type: ignore[attr-defined]
        except OSError as e:
            raise self._failed(e) from None
        self.count += n or 0
        return n or 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.raw.read(n)
        except OSError as e:
            raise self._failed(e) from None
        self.count += len(data)
        return data

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        pass


def create(source: str, opts: CreateOptions, progress: Callable[[int, int | None], None] | None = None,
           warn: Callable[[str], None] | None = None, stream: BinaryIO | None = None) -> CreateResult:
    """Build from the file `source`, or from `stream` (then `source` only names it in messages:
    convert streams image layers straight from their archive or registry)."""
    validate(opts)
    t0 = time.monotonic()
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn:
            warn(msg)

    chunk_dict = load_chunk_dict(opts.chunk_dict, opts) if opts.chunk_dict else None
    with Outputs() as outputs:
        return _build(source, opts, chunk_dict, outputs, progress, _warn, warnings, t0, stream)


def _build(source: str, opts: CreateOptions, chunk_dict: DictChunks | None, outputs: Outputs,
           progress: Callable[[int, int | None], None] | None, warn: Callable[[str], None],
           warnings: list[str], t0: float, input_stream: BinaryIO | None = None) -> CreateResult:
    v6 = opts.fs_version == 6
    layer_file = opts.output is not None
    layout = opts.layout if layer_file else "separate"
    if layer_file:
        out_fd = outputs.open(opts.output, "-o").fileno()  # type: ignore[arg-type]
        base = LAYOUT_A_BLOB_OFFSET if layout == LayerFileLayout.A else 0
        blob = BlobFile(out_fd, base)
        blob_offset = base if layout == LayerFileLayout.A else 0
    else:
        if opts.blob_dir:
            outputs.make_dir(opts.blob_dir, "--blob-dir")
        blob_file = outputs.open(opts.blob or os.path.join(opts.blob_dir, "blob"),  # type: ignore[arg-type]
                                 "--blob" if opts.blob else "--blob-dir")
        blob = BlobFile(blob_file.fileno(), 0)
        blob_offset = opts.blob_offset or 0
    kernel_layout = v6 and opts.aligned_chunk and opts.compressor == Compressor.NONE

    dict_used: dict[int, int] = {}      # dict blob number -> index in our blob table
    table: list[BlobDesc] = []

    def use_dict_blob(number: int) -> int:
        if number not in dict_used:
            dict_used[number] = len(table)
            table.append(chunk_dict.blobs[number])  # type: ignore[union-attr]
        return dict_used[number]

    chunker = Chunker(blob, opts.chunk_size, opts.compressor, opts.digester,
                      align_uncompressed=v6 or opts.aligned_chunk, align_stored=kernel_layout,
                      blob_offset=blob_offset, chunk_dict=chunk_dict, workers=opts.workers,
                      on_dict_use=use_dict_blob)
    if input_stream is None:
        stream, total, consumed = read_input(source)
    else:
        counter = _Counting(input_stream, source)
        stream, total, consumed = open_decompressed(counter), None, lambda: counter.count  # type: ignore[arg-type]
    layer = LayerTree(source, warn)
    entries = 0
    try:
        ts = TarStream(stream, source)
        for entry in ts:
            chunks = None
            if entry.is_regular:
                chunks = chunker.add_file(ts.read_data, entry.size)
            layer.add(entry, chunks)
            entries += 1
            if progress and entries % 64 == 0:
                progress(consumed(), total)
        layer.finish()
        chunker.finish()
    except BaseException:
        chunker.close()
        raise
    if progress:
        progress(consumed(), total)
    if entries == 0 and source != "-" and total == 0:
        raise LayerError(source, "empty file: not a tar archive (an empty layer is a tar with only "
                         "end-of-archive blocks)")
    for name, count in sorted(layer.dropped_xattrs.items()):
        warn(f"dropped xattr {name!r} on {count} entr{'y' if count == 1 else 'ies'}: RAFS keeps only "
             "user., trusted., security. and POSIX ACL xattrs (values up to 64 KiB)")
    if opts.whiteout_spec == WhiteoutSpec.OVERLAYFS:
        overlayfs_to_oci(layer.root)
    t_read = time.monotonic()

    tree = Tree(root=layer.root, version=opts.fs_version, compressor=opts.compressor,
                digester=opts.digester, chunk_size=opts.chunk_size, explicit_uid_gid=True)
    own = chunker.own_chunks
    own_index = len(table) if own else None
    chunker.seen.clear()   # the dedup map is done with: a million digests
    if own_index is not None:
        _remap_own(tree.root, own_index, own)

    features = int(BlobFeatures.CAP_TAR_TOC)
    if v6 or opts.aligned_chunk:
        features |= BlobFeatures.ALIGNED
    desc = BlobDesc(blob_id=PLACEHOLDER_BLOB_ID, compressor=opts.compressor, digester=opts.digester,
                    chunk_size=opts.chunk_size, chunk_count=len(own),
                    uncompressed_size=chunker.uncompressed_size, features=features)
    if own_index is not None:
        table.append(desc)
    tree.blobs = table
    if opts.prefetch_policy == PrefetchPolicy.FS:
        tree.prefetch = list(opts.prefetch_patterns)
    elif opts.prefetch_policy == PrefetchPolicy.BLOB and own_index is not None:
        if v6:
            warn("--prefetch-policy blob: RAFS v6 blob tables have no readahead range; nothing recorded")
        else:
            _blob_readahead(tree, desc, opts.prefetch_patterns, blob_offset)

    toc: list[bytes] = []
    if own_index is not None:
        if kernel_layout:
            blob.pad_to(4096)  # the kernel reads whole blocks of the blob device
        data_size = desc.compressed_size = blob.size
        if layout == LayerFileLayout.B:
            running = blob.hash.copy()
            running.update(blob.section_header(b"image.blob", data_size))
            toc.append(toc_entry(b"image.blob", TOC_FLAGS[Compressor.NONE], running.digest(), 0, data_size,
                                 chunker.uncompressed_size))
            if not v6:  # v5 records the position at bootstrap time, header included
                desc.features |= BlobFeatures.INLINED_FS_META | BlobFeatures.HAS_TAR_HEADER
                desc.compressed_size = blob.size
        if v6:
            _write_blob_meta(blob, desc, own, blob_offset, layout, toc, opts.compressor)
            if layout == LayerFileLayout.B:
                tree.extra_flags |= SuperFlags.INLINED_CHUNK_DIGEST
        if kernel_layout and layout != LayerFileLayout.B:
            blob.pad_to(4096)  # loop devices drop a trailing partial sector

    # the bootstrap
    if layout == LayerFileLayout.B:
        if own_index is not None:
            desc.blob_id = PLACEHOLDER_BLOB_ID
        boot, missing = (write_v6 if v6 else write_v5)(tree)
        boot_offset = blob.size
        if v6:
            stored, compressed = compress(bytes(boot), Compressor.ZSTD)
            blob.write(stored)
            toc.append(toc_entry(b"image.boot",
                                 TOC_FLAGS[Compressor.ZSTD if compressed else Compressor.NONE], sha256(boot),
                                 boot_offset, len(stored), len(boot)))
            blob.section_header(b"image.boot", len(stored))
            toc_data = b"".join(toc)
            blob.write(toc_data)
            blob.section_header(b"rafs.blob.toc", len(toc_data))
        else:
            blob.write(boot)
            blob.section_header(b"image.boot", len(boot))
        blob_id = blob.blob_id() if own_index is not None else None
    else:
        blob_id = blob.blob_id() if own_index is not None else None
        if own_index is not None:
            desc.blob_id = blob_id  # type: ignore[assignment]
        boot, missing = (write_v6 if v6 else write_v5)(tree)
    for p in missing:
        warn(f"prefetch pattern {os.fsdecode(p)!r} matches no entry")
    ids = [b.blob_id for b in table[:own_index]] + [blob_id] if own_index is not None else \
        [b.blob_id for b in table]
    t_boot = time.monotonic()

    blob_path: str | None = None
    if layer_file:
        if layout == LayerFileLayout.A:
            _pack_layout_a(out_fd, blob.size if own_index is not None else None, boot, opts.output)
        out_path = opts.output
    else:
        out_path = None
        if own_index is None:
            # no data of its own: the bootstrap references no own blob, so no blob file
            outputs.drop(blob_file)
        else:
            blob_path = opts.blob or os.path.join(opts.blob_dir, blob_id)  # type: ignore[arg-type]
            outputs.retarget(blob_file, blob_path)
        outputs.open(opts.bootstrap, "--bootstrap").write(boot)  # type: ignore[arg-type]
    t_end = time.monotonic()
    inode_count = sum(1 for _ in tree.walk())
    return CreateResult(
        fs_version=opts.fs_version, compressor=opts.compressor, digester=opts.digester,
        layout=layout, output=out_path, bootstrap=opts.bootstrap, blob=blob_path, blob_id=blob_id,
        blob_size=blob.size if own_index is not None else 0, chunk_count=len(own),
        dedup_hits=chunker.dedup_hits, inode_count=inode_count, bootstrap_size=len(boot),
        input_bytes=chunker.input_bytes, stored_bytes=chunker.stored_bytes,
        blobs=cast(list[str], ids), warnings=warnings,
        timings={"read_and_chunk": round(t_read - t0, 4), "bootstrap": round(t_boot - t_read, 4),
                 "write": round(t_end - t_boot, 4), "total": round(t_end - t0, 4)})


def _remap_own(root: Node, index: int, own: list[ChunkInfo]) -> None:
    """Give the chunks of the blob just built their index in the blob table. `own` (the blob's
    chunks in index order) then holds remapped copies too, so the originals are freed."""
    seen: set[int] = set()
    for child in non_directories(root):
        if child.is_reg and id(child) not in seen:
            seen.add(id(child))
            chunks = child.chunks
            for i, c in enumerate(chunks):
                if c.blob_index == OWN_BLOB:
                    chunks[i] = c = c.replace(blob_index=index)
                    own[c.index] = c


def _blob_readahead(tree: Tree, desc: BlobDesc, patterns: list[bytes], blob_offset: int) -> None:
    """Blob prefetch policy: one readahead range over the stored chunks of the named files."""
    start, end = None, 0
    for pattern in patterns:
        node = tree.lookup(pattern)
        if node is None:
            continue
        stack = [node]
        while stack:
            n = stack.pop()
            stack.extend((n.children or {}).values())
            for c in n.chunks:
                if c.blob_index == OWN_BLOB or c.blob_index == len(tree.blobs) - 1:
                    s = c.compressed_offset - blob_offset
                    start = s if start is None else min(start, s)
                    end = max(end, s + c.compressed_size)
    if start is not None:
        desc.readahead_offset, desc.readahead_size = start, end - start


def _write_blob_meta(blob: BlobFile, desc: BlobDesc, own: list, blob_offset: int, layout: str,
                     toc: list[bytes], compressor: str) -> None:
    """RAFS v6 blob meta: the ci table (v1 entries), its 4 KiB header and, in layout B, the
    chunk digest array, each section followed by its tar header (blob.md §7.2, §8, §9)."""
    ci_raw = b"".join(ci_v1(c) for c in own)
    stored, compressed = compress(ci_raw, compressor)
    ci_compressor = COMPRESSOR_IDS[compressor] if compressed else 0
    if layout == LayerFileLayout.B:
        desc.features |= (BlobFeatures.HAS_TAR_HEADER | BlobFeatures.HAS_TOC | BlobFeatures.INLINED_FS_META
                          | BlobFeatures.INLINED_CHUNK_DIGEST)
    ci_off = blob.write(stored)
    header = meta_header(desc.features, ci_compressor, len(own), blob_offset + ci_off, len(stored),
                         len(ci_raw))
    header_off = blob.write(header)
    desc.ci_compressor = ci_compressor
    desc.ci_offset = blob_offset + ci_off
    desc.ci_compressed_size = len(stored)
    desc.ci_uncompressed_size = len(ci_raw)
    if layout == LayerFileLayout.B:
        blob.section_header(b"blob.meta", len(stored) + len(header))
        meta_flags = TOC_FLAGS[Compressor(compressor) if compressed else Compressor.NONE]
        toc.append(toc_entry(b"blob.meta", meta_flags,
                             sha256(ci_raw), ci_off, len(stored), len(ci_raw)))
        toc.append(toc_entry(b"blob.meta.header", TOC_FLAGS[Compressor.NONE], sha256(header), header_off,
                             len(header), len(header)))
        digests = b"".join(c.block_id for c in own)
        dig_off = blob.write(digests, hashed=False)
        blob.section_header(b"blob.digest", len(digests))
        toc.append(toc_entry(b"blob.digest", TOC_FLAGS[Compressor.NONE], sha256(digests), dig_off,
                             len(digests), len(digests)))


def _tar_header(name: str, size: int, kind: bytes) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o444
    ti.mtime = 0
    raw = ti.tobuf(format=tarfile.USTAR_FORMAT)
    assert len(raw) == TAR_BLOCK
    return raw


def _pack_layout_a(fd: int, blob_size: int | None, boot: bytes | bytearray, out: str | None = None) -> None:
    """Standard tar: `image/`, `image/image.blob` (data already at 1024), `image/image.boot`."""
    if blob_size is not None and blob_size > LAYOUT_A_MAX_BLOB:
        raise UsageError(f"{out}: layout A holds a blob of at most {LAYOUT_A_MAX_BLOB} bytes (the "
                         f"USTAR size field of image/image.blob); this layer's blob has {blob_size} "
                         "bytes: use --layout B")
    os.pwrite(fd, _tar_header("image/", 0, tarfile.DIRTYPE), 0)
    if blob_size is None:
        pos = TAR_BLOCK
    else:
        os.pwrite(fd, _tar_header("image/image.blob", blob_size, tarfile.REGTYPE), TAR_BLOCK)
        pos = LAYOUT_A_BLOB_OFFSET + align(blob_size, TAR_BLOCK)
        if blob_size % TAR_BLOCK:
            os.pwrite(fd, bytes(align(blob_size, TAR_BLOCK) - blob_size), LAYOUT_A_BLOB_OFFSET + blob_size)
    os.pwrite(fd, _tar_header("image/image.boot", len(boot), tarfile.REGTYPE), pos)
    pos += TAR_BLOCK
    _pwrite_all(fd, boot, pos)   # not joined with its padding: that would copy the bootstrap
    pos += len(boot)
    os.pwrite(fd, bytes(align(pos, TAR_BLOCK) - pos) + bytes(2 * TAR_BLOCK), pos)


def _pwrite_all(fd: int, data: bytes | bytearray, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n

