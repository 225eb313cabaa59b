"""Which superblock settings every layer of a merge must share (merge.md §2).

The reference is the chunk dict when one is given (it also shaped the layers' chunks), else
the parent bootstrap, else the first source. The digester and compressor only have to agree
for RAFS v5: there they are filesystem-wide (inode digests depend on the digester), while v6
records them per blob.
"""

from __future__ import annotations

import dataclasses

from ..errors import MergeError
from ..format.flags import BlobFeatures, SuperFlags
from ..reader import Image


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    label: str                 # "layer 2 (path)", "chunk dict (path)", ...
    version: int
    chunk_size: int
    explicit_uid_gid: bool
    digester: str
    compressor: str
    tarfs: bool
    flags: int

    @classmethod
    def of(cls, image: Image, label: str) -> "LayerConfig":
        return cls(label=label, version=image.version, chunk_size=image.chunk_size,
                   explicit_uid_gid=bool(image.flags & SuperFlags.EXPLICIT_UID_GID),
                   digester=image.digester, compressor=image.compressor,
                   tarfs=bool(image.flags & SuperFlags.TARTFS_MODE), flags=image.flags)


def _show(field: str, value: object) -> str:
    if field == "chunk size" and isinstance(value, int):
        return f"0x{value:x}"
    if field == "RAFS version":
        return f"v{value}"
    return str(value)


def _short(label: str) -> str:
    """"layer 2" of "layer 2 (path)": the paths are already named once in the message."""
    return label.split(" (", 1)[0]


def check(reference: LayerConfig, other: LayerConfig) -> None:
    fields = [("RAFS version", "version"), ("chunk size", "chunk_size"),
              ("explicit uid/gid", "explicit_uid_gid"), ("TARFS mode", "tarfs")]
    if reference.version == 5 and other.version == 5:
        fields += [("digester", "digester"), ("compressor", "compressor")]
    for field, attr in fields:
        a, b = getattr(reference, attr), getattr(other, attr)
        if a != b:
            raise MergeError(
                f"cannot merge {other.label} with {reference.label}: {field} differs "
                f"({_show(field, b)} in {_short(other.label)}, {_show(field, a)} in "
                f"{_short(reference.label)})")


class BlobChunkSizes:
    """Every blob of every layer must use the chunk size of the first blob seen."""

    def __init__(self) -> None:
        self.first: tuple[int, str] | None = None

    def check(self, chunk_size: int, what: str) -> None:
        if self.first is None:
            self.first = (chunk_size, what)
            return
        size, first = self.first
        if chunk_size != size:
            raise MergeError(f"cannot merge {what} with {first}: chunk size differs "
                             f"(0x{chunk_size:x} in {_short(what)}, 0x{size:x} in {_short(first)})")


def merged_extra_flags(configs: list[LayerConfig], version: int, blob_features: list[int]) -> int:
    """Superblock bits beyond compressor, digester, uid/gid and xattr (which the writer sets).

    TARFS mode is shared (checked); the image is encrypted if any layer is; v6 marks inlined
    chunk digests only when the final table has blobs and every one has them (upstream
    also sets it for an image without blobs).
    """
    flags = 0
    if configs and configs[0].tarfs:
        flags |= SuperFlags.TARTFS_MODE
    if any(c.flags & SuperFlags.ENCRYPTION_ASE_128_XTS for c in configs):
        flags |= SuperFlags.ENCRYPTION_ASE_128_XTS
    elif any(c.flags & SuperFlags.ENCRYPTION_NONE for c in configs):
        flags |= SuperFlags.ENCRYPTION_NONE
    if version == 6 and blob_features and all(f & BlobFeatures.INLINED_CHUNK_DIGEST
                                              for f in blob_features):
        flags |= SuperFlags.INLINED_CHUNK_DIGEST
    return int(flags)
