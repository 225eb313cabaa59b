"""The one error hierarchy of nydusfs.

Every message names where the problem is (file, structure, field or tar member, offset), what
was expected and what was found. The CLI catches `NydusfsError` once and prints the message;
anything else escaping is a bug.
"""

from __future__ import annotations

import errno as _errno
import os

from .util.show import quoted


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} (0x{value:x})" if value > 9 else str(value)
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    return str(value)


class NydusfsError(Exception):
    """Base class: a problem with the user's input or environment, reported without traceback."""

    errno = _errno.EIO

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(NydusfsError):
    """Bad command-line usage (conflicting or malformed options)."""

    errno = _errno.EINVAL


class FormatError(NydusfsError):
    """Bytes that do not follow the RAFS / blob / layer format.

    `file` may be filled in later by the layer that knows it (the reader), so that codecs stay
    free of path handling.
    """

    errno = _errno.EIO

    def __init__(
        self,
        structure: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        expected: object = None,
        found: object = None,
        hint: str | None = None,
        file: str | os.PathLike | None = None,
    ) -> None:
        self.structure = structure
        self.field = field
        self.offset = offset
        self.expected = expected
        self.found = found
        self.hint = hint
        self.file = os.fspath(file) if file is not None else None
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = [f"{self.file}: " if self.file else ""]
        parts.append(self.structure)
        if self.field:
            parts.append(f" field {self.field}")
        if self.offset is not None:
            parts.append(f" at offset {self.offset} (0x{self.offset:x})")
        details = []
        if self.expected is not None:
            details.append(f"expected {_show(self.expected)}")
        if self.found is not None:
            details.append(f"found {_show(self.found)}")
        if details:
            parts.append(": " + ", ".join(details))
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)

    def in_file(self, file: str | os.PathLike) -> "FormatError":
        """Attach the file name if no inner layer did; returns self for `raise e.in_file(p)`."""
        if self.file is None:
            self.file = os.fspath(file)
            self.message = self._compose()
            self.args = (self.message,)
        return self


class UnsupportedError(FormatError):
    """A valid but unsupported variant of the format (legacy layouts, zran, encryption...)."""


class LayerError(NydusfsError):
    """A problem in an OCI layer tar (the input of create/check): names the member and offset."""

    errno = _errno.EINVAL

    def __init__(self, source: str, message: str, *, member: bytes | str | None = None,
                 offset: int | None = None) -> None:
        self.source = source
        self.member = member
        self.offset = offset
        where = source
        if member is not None:
            where += f": member {quoted(member)}"
        if offset is not None:
            where += f" at offset {offset}"
        super().__init__(f"{where}: {message}")


class ParentNotADirError(LayerError):
    """A tar member whose parent path crosses a non-directory of the same layer."""


class BlobError(NydusfsError):
    """A data blob is missing, short, or holds a chunk that does not decode or verify."""

    errno = _errno.EIO

    def __init__(self, blob_id: str, message: str, *, chunk: int | None = None,
                 offset: int | None = None) -> None:
        self.blob_id = blob_id
        self.chunk = chunk
        self.offset = offset
        where = f"blob {blob_id}"
        if chunk is not None:
            where += f" chunk {chunk}"
        if offset is not None:
            where += f" at offset {offset}"
        super().__init__(f"{where}: {message}")


class MergeError(NydusfsError):
    """Layers that cannot be merged (flags that disagree, several own blobs...)."""

    errno = _errno.EINVAL


class MountError(NydusfsError):
    """Mounting, serving or unmounting failed (the message says where and why)."""


class NotFoundError(NydusfsError, FileNotFoundError):
    """A path or inode that the image does not hold."""

    errno = _errno.ENOENT

    def __init__(self, message: str) -> None:
        NydusfsError.__init__(self, message)


class NotADirError(NydusfsError, NotADirectoryError):
    """A path component that is not a directory."""

    errno = _errno.ENOTDIR

    def __init__(self, message: str) -> None:
        NydusfsError.__init__(self, message)


class InvalidInodeError(NydusfsError, LookupError):
    """An inode number outside the image (what FUSE answers with ENOENT/EINVAL)."""

    errno = _errno.ENOENT


class FieldRangeError(NydusfsError):
    """A value that the output record cannot hold (refused, never truncated)."""

    errno = _errno.EOVERFLOW

    def __init__(self, where: str, structure: str, field: str, value: object,
                 limit: object) -> None:
        self.where = where
        self.structure = structure
        self.field = field
        self.value = value
        self.limit = limit
        if value is None:
            text = f"{where}: a value of {structure} does not fit its field"
        elif isinstance(limit, int) and isinstance(value, int):
            bound = "the limit" if value > limit else "the minimum"
            text = (f"{where}: {structure} field {field}: {show_number(value)} does not fit "
                    f"({bound} is {show_number(limit)})")
        else:
            text = f"{where}: {structure} field {field}: {_show(value)} cannot be stored ({limit})"
        super().__init__(text)


def show_number(value: object) -> str:
    """An integer for a message; a huge one by its size (decimal text of a number with more than
    4300 digits is refused by Python, and would not be read anyway)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}a {value.bit_length()}-bit number"
    return _show(value)
