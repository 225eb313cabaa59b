"""Data blob codecs: chunk compression, digests, blob meta (ci table), ToC, in-blob tar headers.

Spec: blob.md. Library choices: `zstandard` (C zstd, releases the GIL), `lz4.block` (raw LZ4
blocks, no size prefix, as upstream's lz4_block), `blake3` (Rust, releases the GIL), hashlib
sha256 (OpenSSL), stdlib zlib for the rare gzip chunk.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib
from typing import Any, ClassVar

import blake3 as _blake3
import lz4.block as _lz4
import zstandard as _zstd

from ..errors import FormatError
from .choices import Compressor, Digester
from .record import Record, cstr, record

DEFAULT_CHUNK_SIZE = 0x100000
MIN_CHUNK_SIZE = 0x1000
MAX_CHUNK_SIZE = 0x1000000
MAX_CHUNKS_PER_BLOB = 0xFF_FFFF
MAX_DECOMPRESSED = 1 << 30      # bound for any one decompression (chunks, ToC sections)
BLOB_META_MAGIC = 0xB10BB10B
BLOB_META_HEADER_SIZE = 4096
TOC_ENTRY_SIZE = 128
TAR_BLOCK = 512
PLACEHOLDER_BLOB_ID = "x" * 64   # stored for a blob whose digest was unknown when it was written
GZIP_MAGIC = b"\x1f\x8b"               # first bytes of a gzip stream
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"       # first bytes of a zstd frame

# keyed by str: members of the enums are the strings, and callers hold either
COMPRESSOR_IDS: dict[str, int] = {Compressor.NONE: 0, Compressor.LZ4_BLOCK: 1, Compressor.GZIP: 2, Compressor.ZSTD: 3}
COMPRESSOR_NAMES = {v: k for k, v in COMPRESSOR_IDS.items()}
DIGESTER_IDS: dict[str, int] = {Digester.BLAKE3: 0, Digester.SHA256: 1}
DIGESTER_NAMES = {v: k for k, v in DIGESTER_IDS.items()}


def valid_chunk_size(size: int) -> bool:
    return MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE and size & (size - 1) == 0


# --- digests

def digest(data: Any, algo: str) -> bytes:
    if algo == "blake3":
        # blake3 releases the GIL for inputs this large, so worker threads hash in parallel
        return _blake3.blake3(data, max_threads=1).digest()
    if algo == "sha256":
        return hashlib.sha256(data).digest()
    raise ValueError(f"unknown digester {algo!r}")


def new_hasher(algo: str) -> Any:
    return _blake3.blake3() if algo == "blake3" else hashlib.sha256()


# --- compression

_local = threading.local()


def _zstd_compressor() -> _zstd.ZstdCompressor:
    c = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = _zstd.ZstdCompressor(level=3, write_content_size=True)
    return c


def _zstd_decompressor() -> _zstd.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = _zstd.ZstdDecompressor()
    return d


def compress(data: bytes, algo: str) -> tuple[bytes, bool]:
    """Compressed bytes and True, or the raw bytes and False when compression does not shrink."""
    if algo == "none" or not data:
        return data, False
    if algo == "zstd":
        out = _zstd_compressor().compress(data)
    elif algo == "lz4_block":
        out = _lz4.compress(data, mode="default", store_size=False)
    elif algo == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        out = c.compress(data) + c.flush()
    else:
        raise ValueError(f"unknown compressor {algo!r}")
    if len(out) >= len(data):
        return data, False
    return out, True


def decompress(data: bytes, algo: str, size: int) -> bytes:
    """Decompress one chunk to exactly `size` bytes; raises ValueError with the codec's reason.

    Never allocates more than `size` (at most MAX_DECOMPRESSED) bytes, whatever the input
    claims: a zstd frame header or a gzip stream may promise far more than the caller expects.
    """
    if not 0 <= size <= MAX_DECOMPRESSED:
        raise ValueError(f"uncompressed size {size} outside 0..{MAX_DECOMPRESSED}")
    if algo == "zstd":
        try:
            declared = _zstd.get_frame_parameters(data).content_size
            if declared != _zstd.CONTENTSIZE_UNKNOWN and declared != size:
                raise ValueError(f"zstd: frame declares {declared} bytes, expected {size}")
            out = _zstd_decompressor().decompress(data, max_output_size=size)
        except _zstd.ZstdError as e:
            raise ValueError(f"zstd: {e}") from None
    elif algo == "lz4_block":
        try:
            out = _lz4.decompress(data, uncompressed_size=size)
        except _lz4.LZ4BlockError as e:
            raise ValueError(f"lz4_block: {e}") from None
    elif algo == "gzip":
        try:
            d = zlib.decompressobj(31)
            out = d.decompress(data, size + 1)
        except zlib.error as e:
            raise ValueError(f"gzip: {e}") from None
    elif algo == "none":
        out = data
    else:
        raise ValueError(f"unknown compressor {algo!r}")
    if len(out) != size:
        raise ValueError(f"decompressed to {len(out)} bytes, expected {size}")
    return out


# --- blob meta: chunk compression-info (ci) entries

def encode_ci_v1(comp_off: int, comp_size: int, uncomp_off: int, uncomp_size: int) -> bytes:
    """16-byte v1 entry; sizes minus one split into 20 low and 4 high bits."""
    us, cs = uncomp_size - 1, comp_size - 1
    uncomp_info = ((us >> 20) & 0xF) << 8 | (uncomp_off & 0xFFF_FFFF_F000) | (us & 0xFFFFF) << 44
    comp_info = (comp_off & 0xFF_FFFF_FFFF) | ((cs >> 20) & 0xF) << 40 | (cs & 0xFFFFF) << 44
    return struct.pack("<QQ", uncomp_info, comp_info)


def decode_ci_v1(raw: Any, off: int) -> tuple[int, int, int, int]:
    """(compressed_offset, compressed_size, uncompressed_offset, uncompressed_size)."""
    uncomp_info, comp_info = struct.unpack_from("<QQ", raw, off)
    us = ((uncomp_info >> 44) & 0xFFFFF) | ((uncomp_info >> 8) & 0xF) << 20
    cs = ((comp_info >> 44) & 0xFFFFF) | ((comp_info >> 40) & 0xF) << 20
    return comp_info & 0xFF_FFFF_FFFF, cs + 1, uncomp_info & 0xFFF_FFFF_F000, us + 1


def encode_ci_v2(comp_off: int, comp_size: int, uncomp_off: int, uncomp_size: int,
                 flags: int, data: int = 0) -> bytes:
    uncomp_info = (uncomp_off >> 12) & 0xFFFFFFFF | ((uncomp_size - 1) & 0xFFFFFF) << 32 | (flags & 0xFF) << 56
    comp_info = (comp_off & 0xFF_FFFF_FFFF) | (comp_size & 0xFFFFFF) << 40
    return struct.pack("<QQQ", uncomp_info, comp_info, data)


def decode_ci_v2(raw: Any, off: int) -> tuple[int, int, int, int, int]:
    """(compressed_offset, compressed_size, uncompressed_offset, uncompressed_size, flags)."""
    uncomp_info, comp_info, _data = struct.unpack_from("<QQQ", raw, off)
    return (comp_info & 0xFF_FFFF_FFFF, comp_info >> 40, (uncomp_info & 0xFFFFFFFF) << 12,
            ((uncomp_info >> 32) & 0xFFFFFF) + 1, uncomp_info >> 56)


@record
class BlobMetaHeader(Record):
    STRUCTURE: ClassVar[str] = "blob meta header"
    SIZE: ClassVar[int] = BLOB_META_HEADER_SIZE
    FORMAT: ClassVar[str] = "<IIIIQQQQQI4032sI"
    s_magic: int                  # 0
    s_features: int               # 4
    s_ci_compressor: int          # 8
    s_ci_entries: int             # 12
    s_ci_offset: int              # 16
    s_ci_compressed_size: int     # 24
    s_ci_uncompressed_size: int   # 32
    s_ci_zran_offset: int         # 40
    s_ci_zran_size: int           # 48
    s_ci_zran_count: int          # 56
    s_reserved: bytes             # 60
    s_magic2: int                 # 4092


@record
class TocEntry(Record):
    STRUCTURE: ClassVar[str] = "blob ToC entry"
    SIZE: ClassVar[int] = TOC_ENTRY_SIZE
    FORMAT: ClassVar[str] = "<II16s32sQQQ48s"
    flags: int               # 0, 0x1 none, 0x2 zstd, 0x4 lz4_block
    reserved1: int           # 4
    name: bytes              # 8
    uncompressed_digest: bytes  # 24, sha256
    compressed_offset: int   # 56
    compressed_size: int     # 64
    uncompressed_size: int   # 72
    reserved2: bytes         # 80

    @property
    def entry_name(self) -> bytes:
        return cstr(self.name)

    @property
    def compressor(self) -> str:
        kind = self.flags & 0xF
        return TOC_COMPRESSORS.get(kind, f"unknown(0x{kind:x})")


# the compression of a ToC entry's section (the low bits of `flags`)
TOC_FLAGS: dict[str, int] = {Compressor.NONE: 0x1, Compressor.ZSTD: 0x2, Compressor.LZ4_BLOCK: 0x4}
TOC_COMPRESSORS = {v: k for k, v in TOC_FLAGS.items()}


# --- the 512-byte GNU tar headers that follow each section of a layout-B blob

def blob_tar_header(name: bytes, size: int) -> bytes:
    if len(name) > 100:
        raise ValueError("in-blob tar names are at most 100 bytes")
    h = bytearray(TAR_BLOCK)
    h[0:len(name)] = name
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = b"0"
    h[257:263] = b"ustar "
    h[263:265] = b" \0"
    h[148:156] = b" " * 8
    h[148:156] = b"%07o\0" % sum(h)
    return bytes(h)


def tar_checksum_ok(h: Any) -> bool:
    raw = bytes(h[:TAR_BLOCK])
    field = raw[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field or b"x", 8)
    except ValueError:
        return False
    unsigned = sum(raw[:148]) + 256 + sum(raw[156:])
    signed = unsigned - sum(b for b in raw[:148] + raw[156:] if b > 127) * 256
    return stored in (unsigned, signed)


def parse_tar_size(field: bytes) -> int | None:
    if field[:1] and field[0] & 0x80:  # base-256
        value = int.from_bytes(field[1:], "big")
        return value if not field[0] & 0x40 else None
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def parse_blob_tar_header(h: Any, offset: int) -> tuple[bytes, int]:
    """(name, size) of a valid in-blob tar header at `offset`; FormatError otherwise."""
    if len(h) < TAR_BLOCK:
        raise FormatError("tar header", offset=offset, expected="512 bytes", found=f"{len(h)} bytes")
    if not tar_checksum_ok(h):
        raise FormatError("tar header", field="chksum", offset=offset + 148,
                          expected="a valid header checksum", found=bytes(h[148:156]))
    size = parse_tar_size(bytes(h[124:136]))
    if size is None:
        raise FormatError("tar header", field="size", offset=offset + 124,
                          expected="an octal size", found=bytes(h[124:136]))
    return cstr(bytes(h[0:100])), size
