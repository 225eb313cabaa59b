"""Fixed-size on-disk records: a frozen, slotted dataclass per structure with one Struct.

A record class declares `STRUCTURE` (its name in error messages), `SIZE` and `FORMAT` (a struct
format with one code per field, reserved areas as `Ns` so they survive a round trip). The
`@record` decorator turns it into a dataclass and checks, at import time, that the format has
exactly `SIZE` bytes and one item per field.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import struct
from typing import Any, Callable, ClassVar, TypeVar, cast, dataclass_transform

from ..errors import FormatError, UnsupportedError

T = TypeVar("T", bound="Record")
C = TypeVar("C")

_CODE = re.compile(r"(\d*)([xcbB?hHiIlLqQnNefdsp])")


class Record:
    __slots__ = ()
    STRUCTURE: ClassVar[str]
    SIZE: ClassVar[int]
    FORMAT: ClassVar[str]
    _struct: ClassVar[struct.Struct]
    _names: ClassVar[tuple[str, ...]]
    _fields_of: ClassVar[Any]          # operator.attrgetter of every field, in struct order
    _offsets: ClassVar[dict[str, int]]
    _sizes: ClassVar[dict[str, int]]

    @classmethod
    def decode(cls: type[T], buf: Any, off: int = 0) -> T:
        """Decode one record at `off`; a short buffer is a FormatError naming the structure."""
        if off < 0 or off + cls.SIZE > len(buf):
            # name the first field the data does not cover, at that field's offset
            have = max(0, len(buf) - off) if off >= 0 else 0
            cut = next(n for n in cls._names if cls._offsets[n] + cls._sizes[n] > have)
            raise FormatError(
                cls.STRUCTURE, field=cut, offset=max(off, 0) + cls._offsets[cut],
                expected=f"{cls.SIZE} bytes from offset {off}", found=f"{have} bytes",
                hint="data ends inside the structure")
        return cls.maker()(*cls._struct.unpack_from(buf, off))

    @classmethod
    def maker(cls: type[T]) -> Callable[..., T]:
        """What builds this class from its fields in order: `fast_maker`'s, made on first use
        (start-up does not pay ~0.1 ms per record class); a subclass adding no fields (no
        slots of its own) keeps its constructor."""
        make = cls.__dict__.get("_make")
        if make is None:
            make = fast_maker(cls) if cls.__dict__.get("__slots__") else cls
            cls._make = make  # type: ignore[attr-defined]
        return cast("Callable[..., T]", make)

    def encode(self) -> bytes:
        return self._struct.pack(*self._fields_of(self))

    def replace(self: T, **changes: Any) -> T:
        return cast(T, dataclasses.replace(cast(Any, self), **changes))

    @classmethod
    def field_offset(cls, name: str) -> int:
        return cls._offsets[name]

    @classmethod
    def field_error(cls, field: str, at: int, *, expected: object = None, found: object = None,
                    hint: str | None = None, unsupported: bool = False,
                    structure: str | None = None) -> FormatError:
        """The error for `field` of this record when the record starts at file offset `at`: the
        field's offset comes from the record definition, so messages cannot drift from it."""
        kind = UnsupportedError if unsupported else FormatError
        return kind(structure or cls.STRUCTURE, field=field, offset=at + cls._offsets[field],
                    expected=expected, found=found, hint=hint)

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._names}


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """Make `cls` a frozen, slotted dataclass with its Struct (type checkers see the fields)."""
    cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
    fmt = cls.FORMAT
    assert fmt[0] == "<", f"{cls.__name__}: formats are little-endian"
    codes = []
    for count, code in _CODE.findall(fmt[1:]):
        if code == "s":
            codes.append(f"{count or 1}s")
        else:
            codes.extend([code] * int(count or 1))
    names = tuple(f.name for f in dataclasses.fields(cast(Any, cls)))
    assert len(codes) == len(names), f"{cls.__name__}: {len(codes)} codes for {len(names)} fields"
    offsets, sizes, pos = {}, {}, 0
    for name, code in zip(names, codes, strict=True):
        offsets[name] = pos
        sizes[name] = struct.calcsize("<" + code)
        pos += sizes[name]
    cls._struct = struct.Struct(fmt)
    assert cls._struct.size == cls.SIZE == pos, f"{cls.__name__}: size {cls._struct.size} != {cls.SIZE}"
    cls._names = names
    cls._fields_of = operator.attrgetter(*names)
    cls._offsets = offsets
    cls._sizes = sizes
    return cls


def fast_maker(cls: type[C]) -> Callable[..., C]:
    """A callable taking `cls`'s fields (positionally, in order, or by name, no defaults) that
    returns an instance of `cls` equal to `cls(...)`, about six times faster.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, a call per
    field; decoding inodes and chunk records for every request made that most of a directory
    listing's cost. The maker is a twin class with the same slots and base and a plain
    `__init__` (one store per field) that then makes the instance a `cls`: the layouts are the
    same, so the object is exactly what `cls(...)` builds, frozen from then on."""
    fields = dataclasses.fields(cast(Any, cls))
    names = tuple(f.name for f in fields)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in fields), f"{cls.__name__}: fields with defaults"
    assert not hasattr(cls, "__post_init__"), f"{cls.__name__}: __post_init__ would be skipped"
    assert tuple(getattr(cls, "__slots__", ())) == names, f"{cls.__name__}: slots differ from the fields"
    params = ", ".join(names)
    body = "".join(f"    self.{n} = {n}\n" for n in names)
    scope: dict[str, Any] = {"target": cls}
    exec(f"def __init__(self, {params}):\n{body}    self.__class__ = target\n", scope)  # noqa: S102
    return type(f"{cls.__name__}Maker", cls.__bases__,
                {"__slots__": names, "__init__": scope["__init__"], "__module__": cls.__module__})


def align(value: int, unit: int) -> int:
    return (value + unit - 1) // unit * unit


def u32_array(buf: Any, off: int, count: int, structure: str) -> tuple[int, ...]:
    end = off + 4 * count
    if off < 0 or end > len(buf):
        raise FormatError(structure, offset=off, expected=f"{4 * count} bytes",
                          found=f"{max(0, len(buf) - off)} bytes", hint="table runs past the end")
    return struct.unpack_from(f"<{count}I", buf, off)


def encode_u32_array(values: list[int] | tuple[int, ...], pad_to: int = 1) -> bytes:
    raw = struct.pack(f"<{len(values)}I", *values)
    return raw + bytes(align(len(raw), pad_to) - len(raw))


def cstr(raw: bytes) -> bytes:
    """Bytes up to the first NUL (fixed-size, NUL-padded string fields)."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]
