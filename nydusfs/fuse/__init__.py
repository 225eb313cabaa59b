"""The read-only FUSE filesystem behind `nydusfs mount`: the only package importing pyfuse3/trio.

Modules: `inodes` (reader <-> FUSE inode numbers), `guard` (exception -> errno, fault log),
`ops` (the pyfuse3 request handlers), `prefetch` (background warm-up), `serve` (the trio main
loop, signals, readiness), `daemon` (mount, fork to the background, pid file) and `mounts`
(mount table, unmount, pid files; used by `nydusfs umount`, imports neither pyfuse3 nor trio).

This file imports nothing, so that `nydusfs umount` stays free of pyfuse3 and trio.
"""
