"""Let the kernel skip OPEN, RELEASE, OPENDIR and RELEASEDIR: half the requests of a cold read.

FUSE lets a server answer OPEN/OPENDIR with ENOSYS: the kernel then never sends them (nor
RELEASE/RELEASEDIR) again, keeps file pages between opens (FOPEN_KEEP_CACHE) and caches
directory listings (FOPEN_CACHE_DIR), and every READ/READDIR carries file handle 0. pyfuse3
hands `read` and `readdir` only that file handle, never the inode, so on its own it cannot
use this. `install()` puts a small shim in front of pyfuse3's two C callbacks in the live
libfuse session: it copies the request's inode into the file handle, then calls pyfuse3's
callback unchanged. The handlers then receive the FUSE inode as file handle in both modes.

A handler that still sees file handle 0 (a fuse_file_info laid out differently than the shim
assumes) answers EIO rather than guess: FUSE never hands out inode 0.

The shim is installed only when everything checks out: libfuse 3, pyfuse3's extension carries
its symbol table, the session's operation table holds exactly pyfuse3's callbacks at the
places libfuse's `struct fuse_lowlevel_ops` puts them (init, lookup, open, read, opendir,
readdirplus all compared), and every address read lies in a readable mapping. Otherwise
nothing is changed and the server keeps answering OPEN/OPENDIR as before.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import struct
from typing import Any

log = logging.getLogger("nydusfs.fuse")

# positions in libfuse 3's struct fuse_lowlevel_ops (one pointer each)
OPS = {"init": 0, "lookup": 2, "open": 14, "read": 15, "opendir": 20, "readdirplus": 41}
SESSION_SCAN_WORDS = 16       # the table starts within the session's first words
WORD = 8
SYM_SIZE = 24                 # Elf64_Sym
FI_FH_OFFSET = 16             # struct fuse_file_info: flags, bit fields, padding, then fh

_READ = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t,
                         ctypes.c_int64, ctypes.c_void_p)
_READ_GIL = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t,
                              ctypes.c_int64, ctypes.c_void_p)
_installed: list[object] = []  # the shims must live as long as the process


def _symbols(path: str, wanted: set[str]) -> dict[str, int]:
    """Values of the named symbols in an ELF64 little-endian file's .symtab.

    The file is mapped, not read: only the headers, the string table and the matching symbol
    entries are touched (reading the whole 4 MB extension cost more than the rest of the
    shim's set-up)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as data:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            return {}
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                    for i in range(shnum)]
        out: dict[str, int] = {}
        for sh in sections:
            if sh[1] != 2:                       # SHT_SYMTAB
                continue
            strtab = sections[sh[6]]             # sh_link
            start, end = sh[4], sh[4] + sh[5] - sh[5] % SYM_SIZE
            for name in wanted:
                at = data.find(b"\0" + name.encode() + b"\0", strtab[4], strtab[4] + strtab[5])
                if at < 0:
                    continue
                key = struct.pack("<I", at + 1 - strtab[4])      # st_name of the symbol
                pos = data.find(key, start, end)
                while pos >= 0 and (pos - start) % SYM_SIZE:      # only at an entry's start
                    pos = data.find(key, pos + 1, end)
                if pos >= 0:
                    out[name] = struct.unpack_from("<Q", data, pos + 8)[0]   # st_value
        return out


def _load_segments(path: str) -> int | None:
    """p_vaddr of the PT_LOAD segment at file offset 0 (the load base's offset)."""
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr = struct.unpack_from("<IIQQ", table, i * phentsize)
        if p_type == 1 and p_offset == 0:
            return p_vaddr
    return None


def _mappings() -> list[tuple[int, int, str, int, str]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            out.append((lo, hi, parts[1], int(parts[2], 16), path))
    return out


def _readable(maps: list[tuple[int, int, str, int, str]], addr: int, size: int) -> bool:
    return any(lo <= addr and addr + size <= hi and perms[0] == "r" for lo, hi, perms, _, _ in maps)


def _word(addr: int) -> int:
    return ctypes.c_uint64.from_address(addr).value


def _shim(original: int) -> Any:
    call = _READ_GIL(original)        # pyfuse3's callback expects the GIL held: keep it

    def shim(req: int, ino: int, size: int, off: int, fi: int) -> None:
        ctypes.c_uint64.from_address(fi + FI_FH_OFFSET).value = ino
        call(req, ino, size, off, fi)
    return _READ(shim)


def _address(fn: Any) -> int:
    address = ctypes.cast(fn, ctypes.c_void_p).value
    if not address:
        raise ValueError("callback without an address")
    return address


def install() -> bool:
    """Put the shims in place in the current pyfuse3 session; True when done."""
    try:
        return _install()
    except (OSError, ValueError, struct.error, IndexError) as e:
        log.debug("open/opendir stay on: %s", e)
        return False


def _libfuse_major() -> int:
    try:
        return int(ctypes.CDLL("libfuse3.so.3").fuse_version()) // 100
    except (OSError, AttributeError):
        return 0


def _install() -> bool:
    import pyfuse3
    if _libfuse_major() != 3:          # struct fuse_file_info as the shim writes it
        log.debug("open/opendir stay on: not libfuse 3")
        return False
    path = os.path.realpath(pyfuse3.__file__)
    names = {f"__pyx_f_7pyfuse3_fuse_{op}": op for op in OPS}
    syms = _symbols(path, set(names) | {"__pyx_v_7pyfuse3_session"})
    if len(syms) != len(names) + 1:
        log.debug("open/opendir stay on: pyfuse3 has no symbol table")
        return False
    vaddr = _load_segments(path)
    maps = _mappings()
    starts = [lo for lo, _, _, offset, p in maps if p == path and offset == 0]
    if vaddr is None or len(starts) != 1:
        log.debug("open/opendir stay on: pyfuse3's load address not found")
        return False
    base = starts[0] - vaddr
    want = {op: base + syms[name] for name, op in names.items()}
    session_var = base + syms["__pyx_v_7pyfuse3_session"]
    if not _readable(maps, session_var, WORD):
        return False
    session = _word(session_var)
    span = (SESSION_SCAN_WORDS + max(OPS.values()) + 1) * WORD
    if not session or not _readable(maps, session, span):
        return False
    table = None
    for k in range(SESSION_SCAN_WORDS):
        start = session + k * WORD
        if all(_word(start + i * WORD) == want[op] for op, i in OPS.items()):
            table = start
            break
    if table is None:
        log.debug("open/opendir stay on: the session's operations are not pyfuse3's as expected")
        return False
    for op in ("read", "readdirplus"):
        shim = _shim(want[op])
        _installed.append(shim)
        ctypes.c_uint64.from_address(table + OPS[op] * WORD).value = _address(shim)
    return True
