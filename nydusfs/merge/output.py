"""Write the merge's outputs all or nothing: temp files beside the targets, renamed at the end."""

from __future__ import annotations

import os
import tempfile

from ..errors import NydusfsError


def commit(files: list[tuple[str, bytes]]) -> None:
    temps: list[tuple[str, str]] = []
    try:
        for path, data in files:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                           dir=directory)
            except OSError as e:
                raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None
            temps.append((tmp, path))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644 & ~_umask())
            except OSError as e:
                raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise NydusfsError(f"{path}: cannot write: {e.strerror}") from None
    except BaseException:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
