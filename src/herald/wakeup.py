"""Wake a waiting loop in this process at once instead of at its next poll.

Roles in other processes still poll; this only removes the poll delay when the writer and
the reader share a process (``herald serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable


class Wakeup:
    """Subscribers may name the topics they care about; ``notify`` wakes only those."""

    def __init__(self) -> None:
        self._interests: dict[asyncio.Event, frozenset[str] | None] = {}

    def subscribe(self, topics: Iterable[str] | None = None) -> asyncio.Event:
        event = asyncio.Event()
        self._interests[event] = None if topics is None else frozenset(topics)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._interests.pop(event, None)

    def notify(self, topics: Collection[str] | None = None) -> None:
        for event, interests in self._interests.items():
            if topics is None or interests is None or not interests.isdisjoint(topics):
                event.set()


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; clear it and say whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    fired = event.is_set()
    event.clear()
    return fired


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``, ending early if ``stop`` is set; True if it was. Never clears."""
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
