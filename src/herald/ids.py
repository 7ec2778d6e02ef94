"""Identifiers: UUIDv7 (RFC 9562), so ids sort by creation time and index well.

The 12 bits after the version hold the fraction of the millisecond (RFC 9562 6.2, method 3:
steps of 1/4096 ms, about 244 ns), so ids made one after another in a millisecond sort in
that order too: two requests in one millisecond listed "newest first" came back in either
order when those bits were random. The ids of one call share them; 62 random bits follow.
"""

from __future__ import annotations

import os
import time
from datetime import datetime


def uuid7(now_ms: int | None = None) -> str:
    """A version-7 UUID: 48 bits of Unix milliseconds, 12 of its fraction, 62 random bits."""
    return uuid7s(1, now_ms)[0]


def uuid7s(count: int, now_ms: int | None = None) -> list[str]:
    """``count`` version-7 UUIDs of one moment, from one read of the OS's randomness (a batch
    of a thousand notifications needs two thousand). Spelled out from one hex string, not
    through uuid.UUID (a third of the cost) nor a slice of bytes each (0.64 µs an id, 0.39
    without)."""
    ns = time.time_ns() if now_ms is None else now_ms * 1_000_000
    ms, within = divmod(ns, 1_000_000)
    t = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    head = f"{t[:8]}-{t[8:12]}-7{within * 4096 // 1_000_000:03x}-"  # version 7, the fraction
    h = os.urandom(8 * count).hex()  # 16 hex digits an id, of which 62 bits are used
    return [
        f"{head}{_VARIANT[h[i]]}{h[i + 1 : i + 4]}-{h[i + 4 : i + 16]}"
        for i in range(0, 16 * count, 16)
    ]


# The variant's nibble: 0b10, then two random bits (the low two of a random hex digit).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def first_uuid7_at(moment: datetime) -> str:
    """The smallest version-7 UUID of ``moment``'s millisecond: ids created then or later
    sort at or after it (a time window as a range of ids, which their index serves)."""
    ms = int(moment.timestamp() * 1000)
    h = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    return f"{h[:8]}-{h[8:12]}-7000-8000-000000000000"
