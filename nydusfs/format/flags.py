"""Flag words shared by RAFS v5, v6 and blobs, with their names for dump output."""

from __future__ import annotations

import enum
import functools

from .choices import Compressor, Digester


class SuperFlags(enum.IntFlag):
    """RafsSuperFlags (`s_flags` of v5 and of the v6 extended superblock)."""

    COMPRESSION_NONE = 0x1
    COMPRESSION_LZ4 = 0x2
    HASH_BLAKE3 = 0x4
    HASH_SHA256 = 0x8
    EXPLICIT_UID_GID = 0x10
    HAS_XATTR = 0x20
    COMPRESSION_GZIP = 0x40
    COMPRESSION_ZSTD = 0x80
    INLINED_CHUNK_DIGEST = 0x100
    TARTFS_MODE = 0x200
    ENCRYPTION_NONE = 0x0100_0000
    ENCRYPTION_ASE_128_XTS = 0x0200_0000
    PRESERVED_COMPAT_5 = 0x0400_0000
    PRESERVED_COMPAT_4 = 0x0800_0000
    PRESERVED_COMPAT_3 = 0x1000_0000
    PRESERVED_COMPAT_2 = 0x2000_0000
    PRESERVED_COMPAT_1 = 0x4000_0000
    PRESERVED_COMPAT_0 = 0x8000_0000


KNOWN_SUPER_FLAGS = 0
for _f in SuperFlags:
    KNOWN_SUPER_FLAGS |= _f.value


class BlobFeatures(enum.IntFlag):
    ALIGNED = 0x1
    INLINED_FS_META = 0x2
    CHUNK_INFO_V2 = 0x4
    ZRAN = 0x8
    SEPARATE = 0x10
    INLINED_CHUNK_DIGEST = 0x20
    TARFS = 0x40
    BATCH = 0x80
    ENCRYPTED = 0x100
    IS_CHUNKDICT_GENERATED = 0x200
    IS_SEPARATED_WITH_PREFETCH_FILES = 0x400
    EXTERNAL = 0x800
    HAS_TAR_HEADER = 0x1000_0000
    HAS_TOC = 0x2000_0000
    CAP_TAR_TOC = 0x4000_0000
    V5_NO_EXT_BLOB_TABLE = 0x8000_0000


class ChunkFlags(enum.IntFlag):
    COMPRESSED = 0x1
    HOLECHUNK = 0x2
    ENCRYPTED = 0x4
    BATCH = 0x8
    HAS_CRC32 = 0x10


class InodeFlagsV5(enum.IntFlag):
    SYMLINK = 0x1
    HARDLINK = 0x2
    XATTR = 0x4
    HAS_HOLE = 0x8


# Compression algorithms: names as on the nydus-image command line, ids as in v6 blob tables.
COMPRESSOR_FLAG: dict[str, SuperFlags] = {
    Compressor.NONE: SuperFlags.COMPRESSION_NONE,
    Compressor.LZ4_BLOCK: SuperFlags.COMPRESSION_LZ4,
    Compressor.GZIP: SuperFlags.COMPRESSION_GZIP,
    Compressor.ZSTD: SuperFlags.COMPRESSION_ZSTD,
}
DIGESTER_FLAG: dict[str, SuperFlags] = {
    Digester.BLAKE3: SuperFlags.HASH_BLAKE3,
    Digester.SHA256: SuperFlags.HASH_SHA256,
}
CIPHERS = ("none", "aes128-xts", "aes256-xts", "aes256-gcm")


def compressor_of(flags: int) -> Compressor:
    """Upstream decoding precedence: none, lz4, gzip, zstd, else lz4_block."""
    for name, flag in COMPRESSOR_FLAG.items():
        if flags & flag:
            return Compressor(name)
    return Compressor.LZ4_BLOCK


def digester_of(flags: int) -> Digester:
    for name, flag in DIGESTER_FLAG.items():
        if flags & flag:
            return Digester(name)
    return Digester.BLAKE3


def flag_names(flags: int, kind: type[enum.IntFlag]) -> list[str]:
    """Names of the set bits in declaration order, unknown bits as one hex value."""
    return list(_flag_names(flags, kind))


@functools.lru_cache(maxsize=1024)  # dump asks for the same few words once per chunk
def _flag_names(flags: int, kind: type[enum.IntFlag]) -> tuple[str, ...]:
    names = [m.name for m in kind if flags & m.value and m.name]
    rest = flags
    for m in kind:
        rest &= ~m.value
    if rest:
        names.append(f"0x{rest:x}")
    return tuple(names)


# Feature words as `nydus-image check` prints them, in its fixed order.
_FEATURE_WORDS = (
    (BlobFeatures.ALIGNED, "aligned"),
    (BlobFeatures.BATCH, "batch"),
    (BlobFeatures.CAP_TAR_TOC, "cap_toc"),
    (BlobFeatures.INLINED_CHUNK_DIGEST, "chunk-digest"),
    (BlobFeatures.CHUNK_INFO_V2, "chunk-v2"),
    (BlobFeatures.INLINED_FS_META, "fs-meta"),
    (BlobFeatures.SEPARATE, "separate"),
    (BlobFeatures.HAS_TAR_HEADER, "tar-header"),
    (BlobFeatures.HAS_TOC, "toc"),
    (BlobFeatures.ZRAN, "zran"),
)


def feature_words(features: int) -> str:
    return "".join(f"{word} " for bit, word in _FEATURE_WORDS if features & bit)
