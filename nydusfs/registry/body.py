"""Reading a registry's or token server's answers within bounds: a whole answer more than its
limit is an error at once, and any body sent too slowly is given up on (a byte now and then
keeps every read within its timeout; `Pace` wants MIN_RATE over every window of the timeout's
length, so a body that starts fast and then trickles is given up on too)."""

from __future__ import annotations

import time

import httpx

from nydusfs.registry.errors import RegistryError

MIN_RATE = 64 << 10      # bytes/s a body must average over each window of `seconds`


class Pace:
    """Counts a body's bytes as they come: too few within a window of `seconds` raises
    httpx.ReadTimeout (a transport error: callers that retry those retry it, a layer stream
    resumes from the byte it reached)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self.since = time.monotonic()
        self.bytes = 0

    def add(self, n: int) -> None:
        self.bytes += n
        now = time.monotonic()
        elapsed = now - self.since
        if elapsed < self.seconds:
            return
        if self.bytes < MIN_RATE * elapsed:
            raise httpx.ReadTimeout(f"{self.what}: {self.bytes} bytes in {elapsed:.0f} s, "
                                    f"slower than {MIN_RATE >> 10} KiB/s")
        self.since, self.bytes = now, 0


def read_body(resp: httpx.Response, limit: int, seconds: float, what: str) -> bytes:
    """The body of a streamed response, at most `limit` bytes. Too large: RegistryError. Too
    slow: httpx.ReadTimeout (see Pace)."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise RegistryError(f"{what}: {length} bytes, more than the {limit} allowed")
    pace = Pace(seconds, what)
    out = bytearray()
    for part in resp.iter_raw():
        out += part
        if len(out) > limit:
            raise RegistryError(f"{what}: more than the {limit} bytes allowed")
        pace.add(len(part))
    return bytes(out)
