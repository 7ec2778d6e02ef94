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
from typing import Any

from herald.channels.base import Provider
from herald.observability.logging import get_logger
from herald.reliability.circuit import CircuitBreaker, CircuitState
from herald.reliability.ratelimit import SendThrottle

log = get_logger(__name__)

# How often a provider whose circuit is open is checked for being back (when it can be).
REACHABLE_CHECK_SECONDS = 5.0


@dataclass
class ProviderSlot:
    provider: Provider
    breaker: CircuitBreaker
    throttle: SendThrottle | None = None
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


async def probe_when_reachable(
    slot: ProviderSlot, interval: float = REACHABLE_CHECK_SECONDS
) -> None:
    """While the slot's circuit is open, check every ``interval`` whether the provider answers
    again (its ``reachable()``, e.g. an SMTP greeting); when it does, the next send probes it
    at once. Without this an outage's end waits for the circuit's pause, which doubles with
    every failed probe."""
    reachable: Any = getattr(slot.provider, "reachable", None)
    if reachable is None:
        return
    while slot.breaker.state == CircuitState.OPEN:
        await asyncio.sleep(min(interval, slot.breaker.seconds_until_usable() or interval))
        if slot.breaker.state != CircuitState.OPEN:
            return
        if await reachable():
            log.info("circuit.provider_reachable", provider=slot.name)
            slot.breaker.probe_now()
            return
