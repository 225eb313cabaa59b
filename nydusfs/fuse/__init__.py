"""The read-only FUSE filesystem behind `nydusfs mount`: the only package importing pyfuse3/trio.

Modules: `inodes` (reader <-> FUSE inode numbers), `guard` (exception -> errno, fault log),
`ops` (the pyfuse3 request handlers), `prefetch` (background warm-up), `serve` (the trio main
loop, signals, readiness, the control socket), `control` (the control socket's protocol and
the stats document), `daemon` (mount, fork to the background, pid file) and `mounts` (mount
table, unmount, pid files). `mounts` and `control` import neither pyfuse3 nor trio: they serve
`nydusfs umount` and `nydusfs stats`.

This file imports nothing, so that `nydusfs umount` and `stats` stay free of pyfuse3 and trio.
"""
