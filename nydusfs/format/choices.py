"""The values a user chooses between: one enum per option.

Each feeds argparse `choices` (`values()`), the option's validation (`parse()`) and the docs.
Members are strings, so they compare, hash and print as the plain names (`"zstd"`).
"""

from __future__ import annotations

import enum
from typing import Iterable, Self

from ..errors import UsageError


class Choice(enum.StrEnum):
    @classmethod
    def values(cls, allowed: Iterable[Choice] | None = None) -> tuple[str, ...]:
        """The names, in declaration order (or those of `allowed`), for argparse `choices`."""
        return tuple(m.value for m in (cls if allowed is None else allowed))

    @classmethod
    def parse(cls, option: str, value: object, allowed: Iterable[Choice] | None = None) -> Self:
        """The member named `value`, or a UsageError naming the option and the allowed names."""
        names = cls.values(allowed)
        if value not in names:
            raise UsageError(f"{option}: expected one of {', '.join(names)}, found {value!r}")
        return cls(value)


class Compressor(Choice):
    """Chunk compression, named as on the nydus-image command line."""

    NONE = "none"
    LZ4_BLOCK = "lz4_block"
    GZIP = "gzip"
    ZSTD = "zstd"


# gzip chunks are read (upstream can write them) but never written here
WRITABLE_COMPRESSORS = (Compressor.NONE, Compressor.LZ4_BLOCK, Compressor.ZSTD)


class Digester(Choice):
    """Chunk and inode digest."""

    BLAKE3 = "blake3"
    SHA256 = "sha256"


class WhiteoutSpec(Choice):
    """The whiteout convention of a layer (format/whiteout.py)."""

    OCI = "oci"
    OVERLAYFS = "overlayfs"
    NONE = "none"


class PrefetchPolicy(Choice):
    """fs: a prefetch table of paths; blob: a readahead range of the blob; none."""

    FS = "fs"
    BLOB = "blob"
    NONE = "none"


class LayerFileLayout(Choice):
    """Nydus layer file layouts (format/layer.py): A, a standard tar; B, trailing headers + ToC."""

    A = "A"
    B = "B"


FS_VERSIONS = (5, 6)    # RAFS versions read and written
