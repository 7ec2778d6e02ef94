"""Wake a waiting loop at once instead of at its next poll.

In this process directly; in `herald serve`'s consumer process through a link
(``consumer_process.WakeupLink`` forwards every notify). Roles in other processes still poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable

Forward = Callable[[Collection[str] | None], None]


class Wakeup:
    """Subscribers may name the topics they care about; ``notify`` wakes only those."""

    def __init__(self) -> None:
        self._interests: dict[asyncio.Event, frozenset[str] | None] = {}
        self._forwards: list[Forward] = []

    def forward(self, to: Forward) -> None:
        """Pass every notify on to ``to`` as well (another process's waiters)."""
        self._forwards.append(to)

    def subscribe(self, topics: Iterable[str] | None = None) -> asyncio.Event:
        event = asyncio.Event()
        self._interests[event] = None if topics is None else frozenset(topics)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._interests.pop(event, None)

    def notify(self, topics: Collection[str] | None = None) -> None:
        self.notify_here(topics)
        for forward in self._forwards:
            forward(topics)

    def notify_here(self, topics: Collection[str] | None = None) -> None:
        """Wake the waiters of this process only (what a link received from another)."""
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


async def came_before_stop(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until ``wanted`` or ``stop`` is set; True if ``wanted`` came and no stop."""
    waits = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return wanted.is_set() and not stop.is_set()
