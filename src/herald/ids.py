"""Identifiers: UUIDv7 (RFC 9562), so ids sort by creation time and index well."""

from __future__ import annotations

import os
import time
from datetime import datetime


def uuid7(now_ms: int | None = None) -> str:
    """A version-7 UUID: 48 bits of Unix milliseconds, then 74 random bits. Spelled out from
    bytes (not through uuid.UUID, a third of the cost: a batch makes thousands)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = bytearray(os.urandom(10))
    rand[0] = 0x70 | (rand[0] & 0x0F)  # version 7, then 12 random bits
    rand[2] = 0x80 | (rand[2] & 0x3F)  # variant 0b10, then 62 random bits
    h = ((ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + rand).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7s(count: int, now_ms: int | None = None) -> list[str]:
    """``count`` version-7 UUIDs of one millisecond, as ``uuid7`` makes them, from one read of
    the OS's randomness (a batch of a thousand notifications needs two thousand)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    t = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    head = f"{t[:8]}-{t[8:12]}-7"  # the version nibble: 7
    rand = os.urandom(10 * count)
    ids = []
    for at in range(0, 10 * count, 10):
        h = rand[at : at + 10].hex()
        variant = _VARIANT[int(h[4], 16) & 3]  # 0b10, then 2 random bits
        ids.append(f"{head}{h[1:4]}-{variant}{h[5:8]}-{h[8:]}")
    return ids


_VARIANT = "89ab"


def first_uuid7_at(moment: datetime) -> str:
    """The smallest version-7 UUID of ``moment``'s millisecond: ids created then or later
    sort at or after it (a time window as a range of ids, which their index serves)."""
    ms = int(moment.timestamp() * 1000)
    h = (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    return f"{h[:8]}-{h[8:12]}-7000-8000-000000000000"
