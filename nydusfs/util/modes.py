"""File-type tests on anything with an st_mode-style `mode` (reader inodes, tree nodes)."""

from __future__ import annotations

import stat


class FileKind:
    __slots__ = ()
    mode: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)
