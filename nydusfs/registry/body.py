"""Reading a registry's or token server's answer whole, within bounds: more than the limit is
an error at once, and so is a body sent too slowly (a byte now and then keeps every read within
its timeout; the body as a whole must keep to MIN_RATE once `seconds` have passed)."""

from __future__ import annotations

import time

import httpx

from nydusfs.registry.errors import RegistryError

MIN_RATE = 64 << 10      # bytes/s a body must average after its first `seconds`


def read_body(resp: httpx.Response, limit: int, seconds: float, what: str) -> bytes:
    """The body of a streamed response, at most `limit` bytes. Too large: RegistryError. Too
    slow: httpx.ReadTimeout (a transport error: callers that retry those retry it)."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise RegistryError(f"{what}: {length} bytes, more than the {limit} allowed")
    start = time.monotonic()
    out = bytearray()
    for part in resp.iter_raw():
        out += part
        if len(out) > limit:
            raise RegistryError(f"{what}: more than the {limit} bytes allowed")
        if time.monotonic() - start > seconds + len(out) / MIN_RATE:
            raise httpx.ReadTimeout(f"{what}: {len(out)} bytes in {time.monotonic() - start:.0f} s, "
                                    f"slower than {MIN_RATE >> 10} KiB/s")
    return bytes(out)
