"""`nydusfs umount`: unmount a nydusfs mount and wait for its server to exit."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .args import seconds

HELP = "unmount a nydusfs mount and wait for its server to stop"
DESCRIPTION = """\
Unmount MOUNTPOINT (a `nydusfs mount`) and wait until its server process has exited, so that
its blob files are closed when the command returns. The server is found through its pid file
(the default location for the mountpoint, or --pid-file). A mount whose server died is
unmounted as well.

If files are still open under MOUNTPOINT the unmount fails (exit 2) unless --lazy is given:
then the mount is detached at once and the server exits when the last file is closed.
Unmounting as non-root uses the fusermount3 helper.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("umount", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")
    p.add_argument("-l", "--lazy", action="store_true",
                   help="detach now even if busy; the server stops when the mount is no longer used")
    p.add_argument("--pid-file", metavar="FILE",
                   help="the pid file given to `nydusfs mount --pid-file` (default: its default)")
    p.add_argument("--timeout", type=seconds(3600), default=10.0, metavar="SECONDS",
                   help="how long to wait for the server to exit (default 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..fuse.mounts import (FSTYPE, MountError, canonical_path, default_pid_file,
                               mount_entry, process_alive, read_pid_file, remove_pid_file,
                               unmount, wait_gone)

    path = canonical_path(args.mountpoint)
    entry = mount_entry(path)
    if entry is None:
        raise MountError(f"{path}: not mounted")
    if entry.fstype != FSTYPE:
        raise MountError(f"{path}: not a nydusfs mount (it is {entry.fstype} from {entry.source}); "
                         "use umount(8)")
    pid_file = os.path.abspath(args.pid_file) if args.pid_file else default_pid_file(path)
    found = read_pid_file(pid_file)
    pid = found[0] if found and found[1] == path and process_alive(found[0]) else None
    unmount(path, lazy=args.lazy)
    if pid is not None and not args.lazy and not wait_gone(pid, args.timeout):
        raise MountError(f"{path} is unmounted, but its server (pid {pid}) is still running "
                         f"after {args.timeout:g} s")
    if found and (pid is None or not process_alive(pid)):
        remove_pid_file(pid_file, found[0])
    return 0
