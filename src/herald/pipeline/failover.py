"""A channel's providers in priority order, and which one the next attempt uses.

The first provider whose circuit is closed sends. When the primary has failed transiently
``HERALD_CIRCUIT_FAILURE_THRESHOLD`` times in a row its circuit opens and the next provider
takes over; once the primary's circuit lets a probe through, one attempt goes to it, and when
that succeeds it is the primary again. When every circuit is open the choice waits
(consumption pauses, no attempts are burnt) until one lets a probe through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from herald.channels.base import Provider
from herald.reliability.circuit import CircuitBreaker
from herald.reliability.ratelimit import Throttle


@dataclass
class ProviderSlot:
    provider: Provider
    breaker: CircuitBreaker
    throttle: Throttle | None = None
    # Bounds concurrent sends to the provider's capacity (e.g. its connection pool).
    sends: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.sends = asyncio.Semaphore(self.provider.concurrency)

    @property
    def name(self) -> str:
        return self.provider.name


class FailoverChain:
    def __init__(self, slots: Sequence[ProviderSlot]) -> None:
        if not slots:
            raise ValueError("a channel needs at least one provider")
        self.slots = list(slots)

    async def choose(self) -> tuple[ProviderSlot, int | None]:
        """The slot to send through, and the probe number if this send is its circuit's probe
        (see ``CircuitBreaker.ready``)."""
        while True:
            slot = self._pick()
            if slot is not None:
                # Returns at once: claims the probe if one is due.
                return slot, await slot.breaker.ready()
            wait = min(s.breaker.seconds_until_usable() for s in self.slots)
            await asyncio.sleep(min(max(wait, 0.01), 1.0))

    def _pick(self) -> ProviderSlot | None:
        # In priority order, so a due probe of the primary goes before the fallbacks.
        return next((s for s in self.slots if s.breaker.usable()), None)
