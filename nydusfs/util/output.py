"""Output files written whole or not at all.

Each output is a temporary file in its target's directory (the final rename then stays on one
filesystem), created with mode 0o666 less the umask, as any new file. `commit` flushes, fsyncs
and renames every output of a group; any other way out (an exception, Ctrl-C, SIGTERM) removes
them, and removes the directories the group made. Use:

    with atomic_output(path, "--output") as f:          # one file
        f.write(data)

    with Outputs() as outs:                               # several, committed together
        a, b = outs.open(p1, "--bootstrap"), outs.open(p2, "--blob")

Before any work, `check_paths` turns colliding outputs, an output equal to an input, an output
that exists and is not a regular file, and an output in a missing directory into usage errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from typing import IO, Iterable, Iterator, Mapping

from ..errors import NydusfsError, UsageError
from .signals import held, sigterm_exits

_KINDS = {stat.S_IFLNK: "a symlink", stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)  # only writes fail so


def _keys(path: str, follow: bool) -> set[tuple]:
    """What identifies a path: its resolved name, and its inode when it exists."""
    keys: set[tuple] = {("name", os.path.realpath(path))}
    with contextlib.suppress(OSError):
        st = os.stat(path) if follow else os.lstat(path)
        keys.add(("inode", st.st_dev, st.st_ino))
    return keys


Paths = Mapping[str, str | None] | Iterable[tuple[str, str | None]]


def check_paths(outputs: Paths, inputs: Paths = ()) -> None:
    """Usage errors for outputs ((option, path) pairs or an option -> path mapping; None and `-`
    are skipped) that collide with each other or with an input, exist as something other than a
    regular file, or would need a directory that does not exist."""
    given: dict[tuple, str] = {}
    for option, path in _pairs(inputs):
        if path and path != "-":
            for key in _keys(path, follow=True):
                given.setdefault(key, f"an input ({option} {path})")
    for option, path in _pairs(outputs):
        if not path or path == "-":
            continue
        where = f"{option} {path}"
        keys = _keys(path, follow=False)
        clash = next((given[k] for k in keys if k in given), None)
        if clash is not None:
            raise UsageError(f"{where}: is also {clash}; give each output its own path")
        for key in keys:
            given[key] = f"another output ({where})"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            directory = os.path.dirname(path) or "."
            if not os.path.isdir(directory):
                what = "is not a directory" if os.path.lexists(directory) else "does not exist"
                raise UsageError(f"{where}: directory {directory} {what}") from None
            continue
        except OSError as e:
            raise UsageError(f"{where}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise UsageError(f"{where}: exists and is {kind}; only a regular file is replaced")


def _pairs(paths: Paths) -> Iterable[tuple[str, str | None]]:
    return paths.items() if isinstance(paths, Mapping) else paths


class Outputs:
    """A group of output files committed together (see the module docstring)."""

    def __init__(self) -> None:
        self._files: list[tuple[IO, str, str]] = []     # (file, temp path, final path)
        self._made: list[str] = []                       # directories made, outermost first
        self._signals: contextlib.ExitStack | None = None

    def open(self, path: str, option: str | None = None, text: bool = False, buffering: int = -1) -> IO:
        """A new temporary file beside `path`, renamed to it by commit. Binary unless `text`."""
        directory = os.path.dirname(os.path.abspath(path))
        # a short prefix of the name: the temporary name must fit NAME_MAX as the target does
        tmp = os.path.join(directory, f".{os.path.basename(path)[:64]}.{uuid.uuid4().hex[:12]}.tmp")
        with held():  # made and recorded together, so that a signal cannot leak it
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except OSError as e:
                raise NydusfsError(f"{_where(option, path)}: cannot write: {e.strerror}") from None
            f = os.fdopen(fd, "w+" if text else "w+b", buffering, encoding="utf-8" if text else None)
            self._files.append((f, tmp, path))
        return f

    def retarget(self, f: IO, path: str) -> None:
        """Give an open output its final name (known only at the end), in the same directory."""
        for i, (g, tmp, _old) in enumerate(self._files):
            if g is f:
                assert os.path.dirname(os.path.abspath(path)) == os.path.dirname(tmp)
                self._files[i] = (g, tmp, path)

    def drop(self, f: IO) -> None:
        """Give up one output: it will not be written."""
        for item in [x for x in self._files if x[0] is f]:
            self._files.remove(item)
            _remove(item)

    def make_dir(self, path: str, option: str | None = None) -> None:
        """Make the directory `path` if missing (with missing parents); removed again on failure."""
        missing = []
        p = os.path.abspath(path)
        while not os.path.lexists(p):
            missing.append(p)
            p = os.path.dirname(p)
        if not os.path.isdir(p) or os.path.lexists(path) and not os.path.isdir(path):
            raise UsageError(f"{_where(option, path)}: not a directory")
        for d in reversed(missing):
            with held():
                try:
                    os.mkdir(d)
                except OSError as e:
                    raise NydusfsError(f"{_where(option, path)}: cannot make directory {d}: {e.strerror}") from None
                self._made.append(d)

    def commit(self) -> None:
        try:
            for f, _tmp, _path in self._files:
                f.flush()
                os.fsync(f.fileno())
            with held():  # a group is renamed whole
                for f, tmp, path in self._files:
                    f.close()
                    os.replace(tmp, path)
        except OSError as e:
            raise NydusfsError(f"{self._names()}: cannot write: {e.strerror}") from None
        self._files = []
        self._made = []

    def discard(self) -> None:
        for item in self._files:
            _remove(item)
        self._files = []
        for d in reversed(self._made):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        self._made = []

    def _names(self) -> str:
        return ", ".join(path for _, _, path in self._files) or "output"

    def __enter__(self) -> Outputs:
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(sigterm_exits())
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        names = self._names()
        try:
            if kind is None:
                self.commit()
            elif isinstance(e, OSError) and e.errno in _WRITE_ERRORS:
                # a full disk or a failing device while writing: one line naming the outputs
                raise NydusfsError(f"{e.filename or names}: cannot write: {e.strerror}") from None
        finally:
            self.discard()    # after a commit there is nothing left to remove
            assert self._signals is not None
            self._signals.close()


def _where(option: str | None, path: str) -> str:
    return f"{option} {path}" if option else path


def _remove(item: tuple[IO, str, str]) -> None:
    f, tmp, _ = item
    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: str, option: str | None = None, text: bool = False,
                  buffering: int = -1) -> Iterator[IO]:
    """One output file: the file object to write, renamed onto `path` when the block succeeds."""
    with Outputs() as outs:
        yield outs.open(path, option, text, buffering)


def write_outputs(files: Iterable[tuple[str, bytes]]) -> None:
    """(path, data) pairs written together, all or nothing."""
    with Outputs() as outs:
        for path, data in files:
            outs.open(path).write(data)
