"""Plain values the reader hands out: inode attributes and blob descriptions."""

from __future__ import annotations

import dataclasses
from ..format.blob import PLACEHOLDER_BLOB_ID
from ..format.flags import BlobFeatures
from ..format.record import fast_maker
from ..format.v5 import V5Inode
from ..format.v6 import DeviceSlot, InodeCompact, InodeExtended, V6BlobEntry
from ..util.modes import FileKind

# nydusfs keeps one private mark in reserved inode bytes that other readers ignore: a directory
# that a layer only implied (its tar had no entry for it), so that a merge keeps the lower
# layer's real metadata. Layout: 4-byte tag + u32 flags, at the start of the reserved area.
NYDUSFS_TAG = b"nyfs"
MARK_IMPLICIT_DIR = 0x1


def decode_mark(reserved: bytes) -> int:
    if len(reserved) >= 8 and reserved[:4] == NYDUSFS_TAG:
        return int.from_bytes(reserved[4:8], "little")
    return 0


def encode_mark(flags: int, size: int) -> bytes:
    if not flags:
        return bytes(size)
    return (NYDUSFS_TAG + flags.to_bytes(4, "little")).ljust(size, b"\0")


@dataclasses.dataclass(frozen=True, slots=True)
class Inode(FileKind):
    """One inode as the image describes it. `ino` is the reader's inode number: the RAFS v5
    inode number, or the RAFS v6 nid (what the kernel and nydusd show as st_ino)."""

    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    mtime: int
    mtime_nsec: int
    rdev: int               # Linux dev_t for char/block devices, else 0
    implicit: bool          # directory created only to hold children (see MARK_IMPLICIT_DIR)
    offset: int             # file offset of the on-disk inode record
    record: V5Inode | InodeCompact | InodeExtended   # the decoded on-disk record


make_inode = fast_maker(Inode)     # Inode(...) for the readers: one per inode decoded


@dataclasses.dataclass(frozen=True, slots=True)
class BlobInfo:
    index: int
    blob_id: str               # id used to find the blob file
    raw_id: str                # id as stored in the bootstrap
    compressor: str
    digester: str
    chunk_size: int
    chunk_count: int
    compressed_size: int
    uncompressed_size: int
    features: int
    readahead_offset: int = 0
    readahead_size: int = 0
    v6: V6BlobEntry | None = None      # the blob table entry (ci table, ToC fields) for RAFS v6
    device: DeviceSlot | None = None   # the v6 device slot


@dataclasses.dataclass(frozen=True, slots=True)
class Region:
    """One decoded structure, re-encoded: `data` belongs at file offset `offset`."""

    offset: int
    data: bytes
    what: str


def dev_from_disk(value: int) -> int:
    """The on-disk rdev (low 32 bits of glibc makedev) as a Linux dev_t."""
    major = (value >> 8) & 0xFFF
    minor = (value & 0xFF) | ((value >> 12) & 0xFFF00)
    return ((major & 0xFFFFF000) << 32) | ((major & 0xFFF) << 8) | ((minor & 0xFFFFFF00) << 12) | (minor & 0xFF)


def dev_to_disk(dev: int) -> int:
    """Linux dev_t -> the 32-bit on-disk form (new_encode_dev)."""
    import os

    major, minor = os.major(dev), os.minor(dev)
    return ((minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF




def stem_owners(entries: list[tuple[str, int]], stem: str) -> set[int]:
    """Which blobs (given as (stored id, features)) take the file-name stem as their id.

    Upstream gives it to every blob with INLINED_FS_META (not SEPARATE): the blob whose data
    and bootstrap share one file is only known by that file's name. When several blobs carry
    the flag (a chunk-dict blob copied without clearing it), only the ones with the placeholder
    id - or else the last one - take the stem, so two blobs never end up with one id."""
    if not stem:
        return set()
    flagged = [i for i, (raw_id, features) in enumerate(entries)
               if features & BlobFeatures.INLINED_FS_META and not features & BlobFeatures.SEPARATE]
    if len(flagged) <= 1:
        return set(flagged)
    placeholders = {i for i in flagged if entries[i][0] == PLACEHOLDER_BLOB_ID}
    return placeholders or {flagged[-1]}
