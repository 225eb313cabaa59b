"""Streaming reader of OCI layer tars: ustar, GNU and PAX, names as bytes, one pass.

Written for clear errors rather than reusing `tarfile`: every problem names the member and the
offset of its header in the (decompressed) stream. Data is handed out in pieces so multi-GiB
members never sit in memory.
"""

from __future__ import annotations

import base64
import dataclasses
import urllib.parse
from typing import BinaryIO, Iterator

from ..errors import LayerError, show_number
from ..format.blob import TAR_BLOCK as BLOCK
from ..write.limits import DEV_MAJOR_MAX, DEV_MINOR_MAX, U32_MAX, U64_MAX
REGULAR = (b"0", b"\0", b"7")
KNOWN_TYPES = set(REGULAR) | {b"1", b"2", b"3", b"4", b"5", b"6"}
MAX_META = 64 << 20          # longest PAX/GNU long-name payload we accept
MAX_DIGITS = 20              # a decimal number longer than this is past 2^64 anyway


@dataclasses.dataclass(slots=True)
class Entry:
    name: bytes
    type: bytes                   # typeflag: b"0" regular, b"1" hardlink, b"2" symlink, ...
    mode: int                     # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    mtime: int
    mtime_nsec: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[bytes, bytes]
    offset: int                   # offset of the first header of this member in the stream

    @property
    def is_regular(self) -> bool:
        return self.type in REGULAR


# What may follow the end-of-archive blocks (padding to a tape record, or a second archive,
# both ignored): read out to find a compressed stream that ends early, up to this much.
MAX_TRAILER = 64 << 20


class TarStream:
    """Iterate entries of a tar stream; after each regular entry call `read_data` (or nothing:
    unread data is skipped)."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.stream = stream
        self.source = source
        self.pos = 0                  # bytes consumed from the stream
        self._remaining = 0           # data bytes of the current member not yet read
        self._padding = 0
        self._current: Entry | None = None
        self.globals: dict[bytes, bytes] = {}

    # --- low level ------------------------------------------------------------------------
    def _read(self, n: int, what: str) -> bytes:
        chunks = []
        left = n
        while left:
            try:
                piece = self.stream.read(left)
            except LayerError:
                raise
            except Exception as e:  # decompressors raise their own types on corrupt input
                raise LayerError(self.source, f"cannot read the stream: {e}", offset=self.pos) from None
            if not piece:
                break
            chunks.append(piece)
            left -= len(piece)
        data = b"".join(chunks)
        self.pos += len(data)
        if len(data) != n:
            cur = self._current
            raise LayerError(self.source, f"truncated tar: the stream ends at byte {self.pos}, "
                             f"inside {what} ({n - len(data)} more bytes expected)",
                             member=cur.name if cur else None,
                             offset=cur.offset if cur else self.pos - len(data))
        return data

    def _read_some(self, n: int) -> bytes:
        """Up to n bytes (b'' at a clean end of stream)."""
        try:
            data = self.stream.read(n)
        except LayerError:
            raise
        except Exception as e:  # decompressors raise their own types on corrupt input
            raise LayerError(self.source, f"cannot read the stream: {e}", offset=self.pos) from None
        self.pos += len(data)
        return data

    def _skip(self, n: int) -> None:
        while n:
            step = min(n, 1 << 20)
            self._read(step, "member data")
            n -= step

    def read_data(self, n: int) -> bytes:
        """Up to `n` bytes of the current member's data (fewer only at its end)."""
        n = min(n, self._remaining)
        if n <= 0:
            return b""
        data = self._read(n, "member data")
        self._remaining -= n
        return data

    def _finish_member(self) -> None:
        if self._remaining or self._padding:
            self._skip(self._remaining + self._padding)
            self._remaining = self._padding = 0

    # --- headers --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Entry]:
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        start: int | None = None
        while True:
            self._finish_member()
            self._current = None
            header_offset = self.pos
            block = self._read_some(BLOCK)
            if not block:
                if start is not None:
                    raise LayerError(self.source, "truncated tar: extended header without its member",
                                     offset=header_offset)
                return  # end of stream without end-of-archive blocks: accepted, as GNU tar does
            if len(block) < BLOCK:
                block += self._read(BLOCK - len(block), "a tar header")
            if not any(block):
                # end-of-archive marker; concatenated archives are not layers, stop here, but
                # read the stream out so that a compressed one that ends early (a cut gzip
                # trailer or zstd frame) is an error here as everywhere else
                end = self.pos
                while self._read_some(1 << 20):
                    if self.pos - end > MAX_TRAILER:   # /dev/zero on stdin would never end
                        raise LayerError(self.source, f"more than {MAX_TRAILER >> 20} MiB follow "
                                         "the end-of-archive marker: not a layer, or a stream "
                                         "that does not end", offset=end - BLOCK)
                return
            if start is None:
                start = header_offset
            h = self._parse_header(block, header_offset)
            kind = h["type"]
            size = h["size"]
            if kind in (b"x", b"g", b"L", b"K"):
                if size > MAX_META:
                    raise LayerError(self.source, f"extended header of {size} bytes is too large",
                                     offset=header_offset)
                payload = self._read(size, "extended header data")
                self._skip((-size) % BLOCK)
                if kind == b"x":
                    pax.update(self._parse_pax(payload, header_offset))
                elif kind == b"g":
                    self.globals.update(self._parse_pax(payload, header_offset))
                elif kind == b"L":
                    long_name = payload.split(b"\0", 1)[0]
                else:
                    long_link = payload.split(b"\0", 1)[0]
                continue
            entry = self._make_entry(h, pax, long_name, long_link, start)
            pax, long_name, long_link, start = {}, None, None, None
            self._current = entry
            # as tarfile does: only regular members (and GNU dumpdirs) carry data blocks
            data_size = entry.size if (entry.is_regular or kind == b"D") else 0
            self._remaining = data_size
            self._padding = (-data_size) % BLOCK
            yield entry

    def _num(self, field: bytes, name: str, offset: int) -> int:
        if field[:1] and field[0] & 0x80:
            if field[0] == 0xFF:
                if name == "mtime":     # GNU tar and Python's tarfile write dates before 1970 so
                    return int.from_bytes(field, "big", signed=True)
                raise LayerError(self.source, f"negative base-256 value in header field {name}",
                                 offset=offset)
            return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        text = field.split(b"\0", 1)[0].strip(b" ")
        if not text:
            return 0
        try:
            return int(text, 8)
        except ValueError:
            raise LayerError(self.source, f"header field {name} is not octal: {field!r}",
                             offset=offset) from None

    def _parse_header(self, b: bytes, offset: int) -> dict:
        stored = b[148:156]
        try:
            want = int(stored.split(b"\0", 1)[0].strip(b" ") or b"x", 8)
        except ValueError:
            want = -1
        unsigned = sum(b[:148]) + 256 + sum(b[156:])
        signed = unsigned - 256 * sum(1 for x in b[:148] + b[156:] if x > 127)
        if want not in (unsigned, signed):
            shown = stored.decode("ascii", "replace").strip(" \0")
            raise LayerError(self.source, f"bad tar header checksum (stored {shown!r}, computed "
                             f"{unsigned:o}): not a tar stream, or a corrupt header", offset=offset)
        magic = b[257:263]
        name = b[0:100].split(b"\0", 1)[0]
        if magic == b"ustar\x00" and b[345]:
            name = b[345:500].split(b"\0", 1)[0] + b"/" + name
        return {
            "name": name, "mode": self._num(b[100:108], "mode", offset),
            "uid": self._num(b[108:116], "uid", offset), "gid": self._num(b[116:124], "gid", offset),
            "size": self._num(b[124:136], "size", offset), "mtime": self._num(b[136:148], "mtime", offset),
            "type": b[156:157], "linkname": b[157:257].split(b"\0", 1)[0],
            "devmajor": self._num(b[329:337], "devmajor", offset) if magic[:5] == b"ustar" else 0,
            "devminor": self._num(b[337:345], "devminor", offset) if magic[:5] == b"ustar" else 0,
            "offset": offset,
        }

    def _parse_pax(self, payload: bytes, offset: int) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(payload):
            if payload[pos] == 0:
                break  # NUL padding after the records
            sp = payload.find(b" ", pos)
            if sp < 0:
                raise LayerError(self.source, "malformed PAX record (no length field)", offset=offset)
            try:
                length = int(payload[pos:sp])
            except ValueError:
                raise LayerError(self.source, f"malformed PAX record length {payload[pos:sp][:20]!r}",
                                 offset=offset) from None
            record = payload[pos:pos + length]
            if length <= sp - pos + 1 or len(record) != length or not record.endswith(b"\n"):
                raise LayerError(self.source, "malformed PAX record: the length does not end at "
                                 "the record's newline", offset=offset)
            key, eq, value = record[sp - pos + 1:-1].partition(b"=")
            if not eq:
                raise LayerError(self.source, f"malformed PAX record {key[:40]!r} (no '=')", offset=offset)
            out[key] = value
            pos += length
        return out

    def _make_entry(self, h: dict, pax: dict[bytes, bytes], long_name: bytes | None,
                    long_link: bytes | None, start: int) -> Entry:
        merged = dict(self.globals)
        merged.update(pax)
        name = h["name"]
        if long_name is not None:
            name = long_name
        linkname = long_link if long_link is not None else h["linkname"]
        kind = h["type"]
        xattrs: dict[bytes, bytes] = {}
        mtime, mtime_nsec = h["mtime"], 0
        uid, gid, size = h["uid"], h["gid"], h["size"]
        for key, value in merged.items():
            if key == b"path":
                name = value
            elif key == b"linkpath":
                linkname = value
            elif key in (b"uid", b"gid", b"size"):
                if not value.isdigit():
                    raise LayerError(self.source, f"PAX {key.decode()} is not a decimal number: "
                                     f"{value[:40]!r}", member=name, offset=start)
                if len(value.lstrip(b"0")) > MAX_DIGITS:
                    raise LayerError(self.source, f"PAX {key.decode()}: a {len(value)}-digit number "
                                     f"does not fit (the limit is {U32_MAX if key != b'size' else U64_MAX})",
                                     member=name, offset=start)
                if key == b"uid":
                    uid = int(value)
                elif key == b"gid":
                    gid = int(value)
                else:
                    size = int(value)
            elif key == b"mtime":
                mtime, mtime_nsec = self._pax_time(value, name, start)
            elif key.startswith(b"SCHILY.xattr."):
                xattrs[key[len(b"SCHILY.xattr."):]] = value
            elif key.startswith(b"LIBARCHIVE.xattr."):
                try:
                    xname = urllib.parse.unquote_to_bytes(key[len(b"LIBARCHIVE.xattr."):])
                    xattrs[xname] = base64.b64decode(value + b"=" * (-len(value) % 4))
                except ValueError:
                    raise LayerError(self.source, f"bad LIBARCHIVE.xattr record {key[:60]!r}",
                                     member=name, offset=start) from None
            elif key.startswith(b"GNU.sparse."):
                raise LayerError(self.source, "GNU sparse files are not supported (refused rather "
                                 "than stored without their holes' layout)", member=name, offset=start)
        if kind == b"S":
            raise LayerError(self.source, "GNU sparse files are not supported", member=name, offset=start)
        if kind == b"D":
            kind = b"5"   # GNU dumpdir: a directory with a listing we do not need
        if kind not in KNOWN_TYPES:
            raise LayerError(self.source, f"unsupported tar entry type {kind!r}", member=name,
                             offset=start)
        if not name:
            raise LayerError(self.source, "entry with an empty name", offset=start)
        entry = Entry(name=name, type=kind, mode=h["mode"] & 0o7777, uid=uid, gid=gid, size=size,
                      mtime=mtime, mtime_nsec=mtime_nsec, linkname=linkname,
                      devmajor=h["devmajor"], devminor=h["devminor"], xattrs=xattrs, offset=start)
        self._check_limits(entry, merged)
        return entry

    def _check_limits(self, e: Entry, pax: dict[bytes, bytes]) -> None:
        """Refuse what RAFS cannot store (rather than truncate it): names with NULs, owners past
        32 bits, times past 64 bits, device numbers past the 12/20 bits of the on-disk rdev.
        A negative mtime is kept here; the layer tree clamps it to 0 (with a warning)."""
        def bad(message: str) -> LayerError:
            return LayerError(self.source, message, member=e.name, offset=e.offset)

        def origin(field: str) -> str:
            return f"PAX {field}" if field.encode() in pax else f"header field {field}"

        if b"\0" in e.name:
            raise bad("PAX path holds a NUL byte (a name cannot)")
        if b"\0" in e.linkname and e.type in (b"1", b"2"):
            raise bad("PAX linkpath holds a NUL byte (a link target cannot)")
        for xname in e.xattrs:
            if not xname or b"\0" in xname:
                raise bad(f"xattr name {xname[:60]!r} is empty or holds a NUL byte")
        for field, value, limit in (("uid", e.uid, U32_MAX), ("gid", e.gid, U32_MAX),
                                    ("mtime", e.mtime, U64_MAX), ("size", e.size, U64_MAX)):
            if value > limit:
                raise bad(f"{origin(field)} {show_number(value)} does not fit (the limit is "
                          f"{limit}: RAFS stores {limit.bit_length()}-bit {field}s)")
        if e.type in (b"3", b"4"):
            for field, value, limit in (("devmajor", e.devmajor, DEV_MAJOR_MAX),
                                        ("devminor", e.devminor, DEV_MINOR_MAX)):
                if value > limit:
                    raise bad(f"header field {field} {show_number(value)} does not fit (the limit "
                              f"is {limit}: RAFS stores rdev as a 12-bit major and a 20-bit minor)")

    def _pax_time(self, value: bytes, name: bytes, start: int) -> tuple[int, int]:
        text = value.decode("ascii", "replace")
        neg = text.startswith("-")
        sec, _, frac = text[1 if neg else 0:].partition(".")
        if not sec.isdigit() or (frac and not frac.isdigit()):
            raise LayerError(self.source, f"PAX mtime is not a number: {value[:40]!r}", member=name,
                             offset=start)
        if len(sec.lstrip("0")) > MAX_DIGITS:
            raise LayerError(self.source, f"PAX mtime: a {len(sec)}-digit number of seconds does "
                             f"not fit (the limit is {U64_MAX})", member=name, offset=start)
        seconds = int(sec)
        nsec = int((frac + "000000000")[:9]) if frac else 0
        if neg:
            seconds, nsec = (-seconds - 1, 1_000_000_000 - nsec) if nsec else (-seconds, 0)
        return seconds, nsec
