"""Find the bootstrap and the blob inside a Nydus layer file (spec: tar-stream.md).

A file handed to nydusfs as "a bootstrap" may be:
- a bare RAFS v5 or v6 bootstrap;
- layout A: a standard tar holding `image/image.blob` (data at 1024) and `image/image.boot`;
- layout B: sections each followed by a 512-byte tar header (`image.blob`, `blob.meta`,
  `blob.digest`, `image.boot`), optionally ending with a ToC (`rafs.blob.toc`);
- a gzip/zstd compressed tar holding `image/image.boot` (bootstrap-only layer tarballs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import tarfile
from typing import Any

from ..errors import FormatError
from ..util.limits import BOOTSTRAP_ENV, NotRegularFileError, max_bootstrap, open_regular
from . import v5, v6
from .blob import (GZIP_MAGIC, TAR_BLOCK, TOC_ENTRY_SIZE, ZSTD_MAGIC, TocEntry, decompress,
                   parse_blob_tar_header, tar_checksum_ok)

BOOT_NAMES = (b"image.boot", b"image/image.boot")
BLOB_NAMES = (b"image.blob", b"image/image.blob")
MAX_TOC_SIZE = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    offset: int          # where the stored bytes start in the file
    size: int            # stored size
    compressor: str = "none"
    uncompressed_size: int | None = None
    digest: bytes | None = None  # sha256 of the uncompressed content (ToC only)


@dataclasses.dataclass(frozen=True, slots=True)
class LayerLayout:
    kind: str                     # "bootstrap", "A", "B", "tarball"
    bootstrap: Section | None     # None for a plain compressed tarball (bootstrap given as bytes)
    blob: Section | None
    toc: tuple[TocEntry, ...] = ()
    sections: tuple[tuple[bytes, Section], ...] = ()


def is_v5_bootstrap(head: bytes) -> bool:
    return len(head) >= 8 and struct.unpack_from("<II", head)[0] == v5.RAFS_V5_MAGIC


def is_v6_bootstrap(head: bytes) -> bool:
    return (len(head) >= 1028 and not any(head[:1024])
            and struct.unpack_from("<I", head, v6.SUPERBLOCK_OFFSET)[0] == v6.EROFS_MAGIC)


def _pread(fd: Any, size: int, offset: int) -> bytes:
    """From a file descriptor, or from a range reader (a blob read in place, nydusfs.image)."""
    data: bytes = os.pread(fd, size, offset) if isinstance(fd, int) else fd.pread(size, offset)
    return data


def detect(fd: Any, name: str) -> LayerLayout:
    """Classify the file (a descriptor, or a range reader with `size` and `pread`) and locate
    its sections without reading the data."""
    size = os.fstat(fd).st_size if isinstance(fd, int) else fd.size
    if size == 0:
        raise FormatError("Nydus bootstrap or layer", field="size", offset=0, expected="a non-empty file",
                          found="0 bytes", file=name)
    head = _pread(fd, 1028, 0)
    if is_v5_bootstrap(head) or is_v6_bootstrap(head):
        # a layout-B layer without chunk data is `bootstrap | hdr image.boot`
        tail = _pread(fd, TAR_BLOCK, size - TAR_BLOCK) if size > 2 * TAR_BLOCK else b""
        if tail and tar_checksum_ok(tail):
            try:
                found = parse_blob_tar_header(tail, size - TAR_BLOCK)
            except FormatError:
                found = None
            if found == (b"image.boot", size - TAR_BLOCK):
                boot = Section(0, size - TAR_BLOCK)
                return LayerLayout("B", boot, None, (), ((b"image.boot", boot),))
        return LayerLayout("bootstrap", Section(0, size), None)
    if size >= TAR_BLOCK:  # before the magic test: zstd chunk data starts with zstd magic
        tail = _pread(fd, TAR_BLOCK, size - TAR_BLOCK)
        if any(tail) and tar_checksum_ok(tail):
            return _detect_layout_b(fd, name, size, tail)
    if head[:2] == GZIP_MAGIC or head[:4] == ZSTD_MAGIC:
        return LayerLayout("tarball", None, None)
    if len(head) >= TAR_BLOCK and any(head[:TAR_BLOCK]) and tar_checksum_ok(head) and isinstance(fd, int):
        return _detect_layout_a(fd, name)
    raise FormatError("Nydus bootstrap or layer", field="magic", offset=0,
                      expected="RAFS v5 magic 0x52414653 at 0, EROFS magic 0xe0f5e1e2 at 1024, "
                      "or a tar header", found=head[:16], file=name)


def _detect_layout_b(fd: int, name: str, size: int, tail: bytes) -> LayerLayout:
    hdr_name, hdr_size = parse_blob_tar_header(tail, size - TAR_BLOCK)
    if hdr_name == b"rafs.blob.toc":
        return _layout_b_from_toc(fd, name, size, hdr_size)
    sections: list[tuple[bytes, Section]] = []
    cur = size - TAR_BLOCK
    while cur >= 0:
        h = _pread(fd, TAR_BLOCK, cur)
        try:
            n, s = parse_blob_tar_header(h, cur)
        except FormatError as e:
            raise e.in_file(name) from None
        if s > cur:
            raise FormatError("layer section", field="size", offset=cur + 124,
                              expected=f"at most {cur}", found=s, file=name,
                              hint=f"section {n!r} would start before the file")
        sections.append((n, Section(cur - s, s)))
        cur = cur - s - TAR_BLOCK
    found = dict(sections)
    boot = found.get(b"image.boot")
    blob = found.get(b"image.blob")
    return LayerLayout("B", boot, blob, (), tuple(reversed(sections)))


def _layout_b_from_toc(fd: int, name: str, size: int, toc_size: int) -> LayerLayout:
    start = size - TAR_BLOCK - toc_size
    if toc_size % TOC_ENTRY_SIZE or toc_size > MAX_TOC_SIZE or start < 0:
        raise FormatError("blob ToC", field="size", offset=size - TAR_BLOCK + 124,
                          expected=f"a multiple of {TOC_ENTRY_SIZE} up to 1 MiB inside the file",
                          found=toc_size, file=name)
    raw = _pread(fd, toc_size, start)
    entries = tuple(TocEntry.decode(raw, i) for i in range(0, toc_size, TOC_ENTRY_SIZE))
    sections = []
    for i, e in enumerate(entries):
        # older builders record the image.blob header position as its offset: not checked
        if e.entry_name != b"image.blob" and e.compressed_offset + e.compressed_size > size:
            raise FormatError("blob ToC entry", field="compressed_offset",
                              offset=start + i * TOC_ENTRY_SIZE + 56,
                              expected=f"a range inside the {size}-byte file",
                              found=e.compressed_offset, file=name)
        sections.append((e.entry_name, Section(e.compressed_offset, e.compressed_size,
                                               e.compressor, e.uncompressed_size,
                                               e.uncompressed_digest)))
    found = dict(sections)
    blob = found.get(b"image.blob")
    if blob is not None:
        # Older builders record the header position as the image.blob offset; data starts at 0.
        blob = Section(0, blob.size, blob.compressor, blob.uncompressed_size, blob.digest)
    return LayerLayout("B", found.get(b"image.boot"), blob, entries, tuple(sections))


def _detect_layout_a(fd: int, name: str) -> LayerLayout:
    with open(os.dup(fd), "rb", closefd=True) as f:
        try:
            tf = tarfile.open(fileobj=f, mode="r:")
            members: dict[bytes, tuple[int, int, int]] = {}
            while (m := tf.next()) is not None:
                tf.members.clear()  # type: ignore[attr-defined]  # keep no header but the two
                members[_member_name(m.name)] = (m.offset, m.offset_data, m.size)
        except (tarfile.TarError, EOFError) as e:
            raise FormatError("layout A tar", offset=0, expected="a readable tar archive",
                              found=str(e), file=name) from None
    boot = members.get(b"image/image.boot")
    blob = members.get(b"image/image.blob")
    if blob is not None:
        _check_layout_a_blob(name, *blob)
    return LayerLayout("A", Section(boot[1], boot[2]) if boot else None,
                       Section(blob[1], blob[2]) if blob else None)


LAYOUT_A_BLOB_OFFSET = 2 * TAR_BLOCK    # where create puts the blob data (after image/ and its header)
LAYOUT_A_MAX_BLOB = 0o77777777777        # a USTAR size field: 11 octal digits (8 GiB - 1)


def _check_layout_a_blob(name: str, header: int, data: int, size: int) -> None:
    """Layout A's headers are plain USTAR (tar-stream.md): a blob of 8 GiB or more needs a pax
    or base-256 size, which no layout-A writer makes and which moves the data; refused here
    rather than read at offsets the bootstrap did not mean."""
    if size > LAYOUT_A_MAX_BLOB:
        raise FormatError("layout A tar member image/image.blob", field="size", offset=header + 124,
                          expected=f"at most {LAYOUT_A_MAX_BLOB} bytes (a USTAR size field; larger "
                          "blobs need layout B)", found=size, file=name)


def _member_name(raw: str) -> bytes:
    name = os.fsencode(raw)
    while name.startswith(b"./"):
        name = name[2:]
    return name.rstrip(b"/")


def _too_big(structure: str, field: str, size: int, limit: int, name: str,
             offset: int | None = None) -> FormatError:
    return FormatError(structure, field=field, offset=offset,
                       expected=f"a bootstrap of at most {limit} bytes", found=size, file=name,
                       hint=f"set {BOOTSTRAP_ENV} (e.g. {BOOTSTRAP_ENV}=2G) to allow larger ones")


def extract_from_tarball(fd: int, name: str) -> bytes:
    """The bootstrap bytes of a gzip/zstd compressed tar holding `image/image.boot`.

    The member's size is checked against the bootstrap limit before it is read, and the scan
    for it stops once more than the limit has been inflated: a small tarball cannot make us
    allocate or inflate without bound."""
    from ..util.streams import open_decompressed  # local import: only tarballs need it

    limit = max_bootstrap()
    with open(os.dup(fd), "rb", closefd=True) as f:
        stream = open_decompressed(f)
        try:
            tf = tarfile.open(fileobj=stream, mode="r|")
            for m in tf:
                if _member_name(m.name) in BOOT_NAMES and m.isfile():
                    if m.size > limit:
                        raise _too_big("compressed layer tarball member image/image.boot", "size",
                                       m.size, limit, name)
                    fobj = tf.extractfile(m)
                    assert fobj is not None
                    data = fobj.read(m.size)
                    if len(data) != m.size:
                        raise FormatError("compressed layer tarball member image/image.boot",
                                          field="size", expected=f"{m.size} bytes",
                                          found=f"{len(data)} (the stream ends early)", file=name)
                    return data
                if m.offset_data + m.size > limit + (1 << 20):
                    raise FormatError("compressed layer tarball", field="members",
                                      expected=f"image/image.boot within the first {limit} bytes",
                                      found=f"member {m.name!r} ending at {m.offset_data + m.size}",
                                      file=name, hint="not a Nydus bootstrap layer, or one "
                                      f"larger than {BOOTSTRAP_ENV} allows")
        except FormatError:
            raise
        except Exception as e:  # any codec's complaint about the stream means "not readable"
            raise FormatError("compressed layer tarball", offset=0, expected="a readable tar",
                              found=str(e) or type(e).__name__, file=name) from None
    raise FormatError("compressed layer tarball", field="members", expected="a member image/image.boot",
                      found="none", file=name, hint="not a Nydus bootstrap layer")


def load_section(fd: int, name: str, section: Section, what: str) -> bytes | None:
    """Bytes of a compressed section (ToC-described), checked against its digest; None if plain."""
    if section.compressor == "none" and section.digest is None:
        return None
    limit = max_bootstrap()
    if section.size > limit:
        raise _too_big(f"{what} section", "compressed_size", section.size, limit, name, section.offset)
    if section.compressor != "none" and (section.uncompressed_size or 0) > limit:
        raise _too_big(f"{what} section", "uncompressed_size", section.uncompressed_size or 0, limit,
                       name, section.offset)
    raw = _pread(fd, section.size, section.offset)
    if section.compressor != "none":
        try:
            raw = decompress(raw, section.compressor, section.uncompressed_size or 0)
        except ValueError as e:
            raise FormatError(f"{what} section", field="data", offset=section.offset,
                              expected=f"{section.compressor} data of {section.uncompressed_size} bytes",
                              found=str(e), file=name) from None
    if section.digest is not None and any(section.digest):
        got = hashlib.sha256(raw).digest()
        if got != section.digest:
            raise FormatError(f"{what} section", field="digest", offset=section.offset,
                              expected=section.digest.hex(), found=got.hex(), file=name,
                              hint="ToC digest does not match the content")
    return raw


def open_bootstrap(path: str | os.PathLike[str]) -> tuple[Any, LayerLayout, Any]:
    """Return (buffer, layout, keepalive): the bootstrap bytes as a buffer (mmap slice or bytes).

    `keepalive` is the mmap to close when done (or None).
    """
    import mmap

    name = os.fspath(path)
    try:
        fd = open_regular(name, "a bootstrap or Nydus layer")
    except OSError as e:
        raise FormatError("Nydus bootstrap or layer", expected="a readable file",
                          found=e.strerror, file=name) from None
    except NotRegularFileError as e:
        raise FormatError("Nydus bootstrap or layer", expected="a regular file",
                          found=f"a {e.kind}", file=name) from None
    try:
        try:
            layout = detect(fd, name)
        except OSError as e:  # a directory, an unreadable device...
            raise FormatError("Nydus bootstrap or layer", expected="a readable file",
                              found=e.strerror, file=name) from None
        if layout.kind == "tarball":
            return extract_from_tarball(fd, name), layout, None
        if layout.bootstrap is None:
            raise FormatError("Nydus layer", field="sections", expected="an image.boot section",
                              found="none", file=name,
                              hint="a data blob without an inlined bootstrap")
        boot = layout.bootstrap
        data = load_section(fd, name, boot, "image.boot")
        if data is not None:
            return data, layout, None
        m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        if boot.offset == 0 and boot.size == len(m):
            return m, layout, m
        return memoryview(m)[boot.offset:boot.offset + boot.size], layout, m
    finally:
        os.close(fd)
