"""The reference's own idea of what a tar is: headers, extended records, framing.

`tarfile` forgives too much to judge an image by: it ends the archive quietly at the first
header it cannot parse, drops PAX records it cannot parse, reads a malformed PAX number as 0
and stops without a word where the stream is cut short. `TarFrame` watches the decompressed
bytes of a layer as they stream past `tarfile` and checks the framing on its own, so that the
reference refuses every layer that `create` refuses (and written apart from create's reader,
which it must not share code with):

* every header block has a valid checksum (unsigned or signed sum) and numeric fields that are
  octal, or base-256 and not negative (mtime excepted: a date before 1970 is a value);
* extended headers (PAX `x`/`g`, GNU `L`/`K`) are at most 64 MiB, PAX records are
  `LENGTH KEY=VALUE\\n` exactly, PAX uid/gid/size are decimal and PAX mtime is `[-]SEC[.FRAC]`;
* an extended header is followed by its member, every member has a name, and only the entry
  types a layer may hold appear (GNU sparse files are refused);
* the stream does not end inside a header, an extended header, member data or its padding;
  after the end-of-archive block only zeros follow.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, cast

from ..errors import LayerError

BLOCK = 512
MAX_EXTENDED = 64 << 20
DATA_TYPES = (b"0", b"\0", b"7", b"D")            # entries whose data blocks follow the header
ENTRY_TYPES = set(DATA_TYPES) | {b"1", b"2", b"3", b"4", b"5", b"6"}
EXTENDED_TYPES = (b"x", b"g", b"L", b"K")
NUMERIC = (("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124), ("size", 124, 136),
           ("mtime", 136, 148))
DEVICE = (("devmajor", 329, 337), ("devminor", 337, 345))
DECIMAL = re.compile(rb"[0-9]+")
PAX_TIME = re.compile(rb"-?[0-9]+(\.[0-9]*)?")
OCTAL = re.compile(rb" *[0-7]* *")


class TarFrame:
    """Feed it every byte of the decompressed layer, in order; `finish()` at the end."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0                  # bytes seen
        self.unit = bytearray()       # the header block or extended payload being collected
        self.need = BLOCK             # bytes `unit` must reach
        self.state = "header"         # header | extended | skip | end
        self.skip = 0                 # data and padding bytes still to pass
        self.header_at = 0            # offset of the block being handled
        self.first_at: int | None = None  # offset of a pending extended header
        self.kind = b""               # type of the pending extended header
        self.pax: dict[bytes, bytes] = {}
        self.globals: dict[bytes, bytes] = {}
        self.long_name: bytes | None = None

    def watch(self, stream: BinaryIO) -> BinaryIO:
        """`stream`, showing every byte read from it to this frame."""
        return cast(BinaryIO, _Watched(stream, self))

    def _fail(self, message: str, offset: int | None = None, member: bytes | None = None) -> LayerError:
        return LayerError(self.source, message, member=member,
                          offset=self.header_at if offset is None else offset)

    # --- bytes in ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.state == "skip":
                n = min(self.skip, len(view))
                self.skip -= n
                self.pos += n
                view = view[n:]
                if not self.skip:
                    self._expect_header()
                continue
            if self.state == "end":
                rest = bytes(view)
                if rest.count(0) != len(rest):
                    at = self.pos + len(rest) - len(rest.lstrip(b"\0"))
                    raise self._fail("data after the end-of-archive block", offset=at)
                self.pos += len(rest)
                return
            n = min(self.need - len(self.unit), len(view))
            self.unit += view[:n]
            self.pos += n
            view = view[n:]
            if len(self.unit) == self.need:
                unit, self.unit = bytes(self.unit), bytearray()
                if self.state == "header":
                    self._header(unit)
                else:
                    self._extended(unit)

    def finish(self) -> None:
        """The stream ended: only between members (or after the end marker) is that allowed."""
        if self.state == "end" or (self.state == "header" and not self.unit and self.first_at is None):
            return
        if self.state == "header" and not self.unit:
            raise self._fail("truncated tar: an extended header without its member",
                             offset=self.first_at)
        where = {"header": "a tar header", "extended": "an extended header",
                 "skip": "member data or its padding"}[self.state]
        raise self._fail(f"truncated tar: the stream ends at byte {self.pos}, inside {where}")

    # --- units -------------------------------------------------------------------------------
    def _expect_header(self) -> None:
        self.state, self.need = "header", BLOCK
        self.header_at = self.pos

    def _header(self, b: bytes) -> None:
        if not any(b):
            if self.first_at is not None:
                raise self._fail("an extended header without its member", offset=self.first_at)
            self.state = "end"
            return
        name = b[0:100].split(b"\0", 1)[0]
        self._checksum(b, name)
        values = {field: self._number(b[start:end], field, name) for field, start, end in NUMERIC}
        if b[257:262] == b"ustar":
            for field, start, end in DEVICE:
                self._number(b[start:end], field, name)
        kind = b[156:157]
        size = values["size"]
        if kind in EXTENDED_TYPES:
            if size > MAX_EXTENDED:
                raise self._fail(f"extended header of {size} bytes (at most {MAX_EXTENDED})", member=name)
            if self.first_at is None:
                self.first_at = self.header_at
            self.kind = kind
            self.state, self.need = "extended", size
            if size == 0:
                self._extended(b"")
            return
        if b[257:263] == b"ustar\0" and b[345]:
            name = b[345:500].split(b"\0", 1)[0] + b"/" + name
        pax = dict(self.globals)
        pax.update(self.pax)
        if b"size" in pax:
            size = int(pax[b"size"])
        full = pax.get(b"path", self.long_name if self.long_name is not None else name)
        start = self.first_at if self.first_at is not None else self.header_at
        if kind == b"S" or any(k.startswith(b"GNU.sparse.") for k in pax):
            raise self._fail("GNU sparse files are not supported", offset=start, member=full)
        if kind not in ENTRY_TYPES:
            raise self._fail(f"unsupported tar entry type {kind!r}", offset=start, member=full)
        if not full:
            raise self._fail("entry with an empty name", offset=start)
        self.pax, self.long_name, self.first_at = {}, None, None
        data = size if kind in DATA_TYPES else 0
        self._skip(data + (-data) % BLOCK)

    def _extended(self, payload: bytes) -> None:
        size = len(payload)
        if self.kind == b"x":
            self.pax.update(self._records(payload))
        elif self.kind == b"g":
            self.globals.update(self._records(payload))
        elif self.kind == b"L":
            self.long_name = payload.split(b"\0", 1)[0]
        self._skip((-size) % BLOCK)

    def _skip(self, n: int) -> None:
        self.state, self.skip = "skip", n
        if not n:
            self._expect_header()

    # --- fields ------------------------------------------------------------------------------
    def _checksum(self, b: bytes, name: bytes) -> None:
        stored = b[148:156].split(b"\0", 1)[0].strip(b" ")
        unsigned = sum(b[:148]) + 8 * 0x20 + sum(b[156:])
        signed = unsigned - 256 * sum(1 for x in b[:148] + b[156:] if x >= 128)
        if not stored or not OCTAL.fullmatch(stored) or int(stored, 8) not in (unsigned, signed):
            raise self._fail(f"bad tar header checksum (stored {stored[:8]!r}, computed {unsigned:o})",
                             member=name)

    def _number(self, field: bytes, what: str, name: bytes) -> int:
        if field[0] & 0x80:
            if field[0] == 0xFF and what != "mtime":
                raise self._fail(f"negative base-256 value in header field {what}", member=name)
            value = int.from_bytes(field, "big", signed=field[0] == 0xFF)
            return value if field[0] == 0xFF else value & ~(0x80 << 8 * (len(field) - 1))
        text = field.split(b"\0", 1)[0]
        if not OCTAL.fullmatch(text):
            raise self._fail(f"header field {what} is not octal: {field!r}", member=name)
        return int(text.strip(b" ") or b"0", 8)

    def _records(self, payload: bytes) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(payload) and payload[pos] != 0:     # NUL padding may follow the records
            sp = payload.find(b" ", pos, pos + 21)
            if sp < 0 or not DECIMAL.fullmatch(payload[pos:sp]):
                raise self._fail("malformed PAX record: no decimal length")
            length = int(payload[pos:sp])
            record = payload[pos:pos + length]
            if length <= sp - pos + 1 or len(record) != length or record[-1:] != b"\n":
                raise self._fail("malformed PAX record: the length does not end at the record's newline")
            key, eq, value = record[sp - pos + 1:-1].partition(b"=")
            if not eq or not key:
                raise self._fail(f"malformed PAX record {key[:40]!r} (no KEY=)")
            if key in (b"uid", b"gid", b"size") and not DECIMAL.fullmatch(value):
                raise self._fail(f"PAX {key.decode()} is not a decimal number: {value[:40]!r}")
            if key == b"mtime" and not PAX_TIME.fullmatch(value):
                raise self._fail(f"PAX mtime is not a number: {value[:40]!r}")
            out[key] = value
            pos += length
        return out


class _Watched:
    """A read-only stream that shows every byte it hands out to a TarFrame."""

    def __init__(self, stream: BinaryIO, frame: TarFrame) -> None:
        self.stream = stream
        self.frame = frame

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.frame.feed(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
