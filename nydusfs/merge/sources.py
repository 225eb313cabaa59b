"""Opening the merge's inputs: sources, parent bootstrap and chunk dict."""

from __future__ import annotations

import os

from ..errors import NydusfsError
from ..reader import Image, open_image


def open_input(path: str) -> Image:
    """open_image, with operating-system errors (a directory, no permission) reported as ours."""
    try:
        return open_image(path)
    except NydusfsError:
        raise
    except OSError as e:
        raise NydusfsError(f"{path}: cannot read: {e.strerror or e}") from None


def label(kind: str, path: str | os.PathLike) -> str:
    return f"{kind} ({os.fspath(path)})"
