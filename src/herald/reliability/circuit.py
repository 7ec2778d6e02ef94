"""A circuit breaker per provider: stop calling a provider that keeps failing, probe it later.

closed --(``failure_threshold`` consecutive transient failures)--> open
open --(``reset_timeout`` later, one caller lets through as a probe)--> half_open
half_open --(probe succeeds)--> closed;  --(probe fails)--> open, with the timeout doubled
(up to ``max_reset_timeout``).

Only transient failures count: a permanent refusal (an unknown mailbox) shows the provider is
up. While the circuit is open, ``ready()`` waits instead of failing, so deliveries are not
attempted (no retries burnt) and the worker's bounded in-flight work pauses its partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum

from herald.observability.logging import get_logger

log = get_logger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        max_reset_timeout: float = 300.0,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_reset_timeout = reset_timeout
        self.max_reset_timeout = max_reset_timeout
        self.on_change = on_change
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None  # time.time() of the last opening
        self._reset_timeout = reset_timeout
        self._retry_at = 0.0  # monotonic time when the open circuit lets a probe through
        self._probing = False
        self._probes = 0  # probes granted so far: the number of the current one
        self._changed = asyncio.Event()

    async def ready(self) -> int | None:
        """Return when a call may be made: at once if closed, after the pause if open.
        A number when this caller is the half-open circuit's probe: its call must end in
        ``succeeded()`` or ``failed()``, or else in ``release_probe(number)``."""
        while True:
            if self.state == CircuitState.CLOSED:
                return None
            if self.state == CircuitState.OPEN:
                wait = self._retry_at - time.monotonic()
                if wait <= 0:
                    self._set(CircuitState.HALF_OPEN)
                else:
                    await self._wait_for_change(wait)
                    continue
            if not self._probing:  # half open: this caller is the probe
                self._probing = True
                self._probes += 1
                return self._probes
            await self._wait_for_change(self._reset_timeout)

    def probe_now(self) -> None:
        """The provider answers again (a cheap check said so): let the next caller probe now
        instead of at the end of the pause, which may have doubled to minutes."""
        if self.state == CircuitState.OPEN:
            self._retry_at = time.monotonic()
            self._changed.set()

    def release_probe(self, probe: int) -> None:
        """The probe never reached the provider (nothing to send, or cut off): let the next
        caller probe, or the circuit would stay half open with no probe ever coming. A probe
        that already ended (or a later one's number) changes nothing."""
        if self._probing and probe == self._probes and self.state == CircuitState.HALF_OPEN:
            self._probing = False
            self._changed.set()

    def usable(self) -> bool:
        """Whether ``ready()`` would return at once: closed, or a probe is due now."""
        if self.state == CircuitState.CLOSED:
            return True
        if self.state == CircuitState.OPEN:
            return self._retry_at <= time.monotonic()
        return not self._probing

    def seconds_until_usable(self) -> float:
        if self.state == CircuitState.OPEN:
            return max(0.0, self._retry_at - time.monotonic())
        return 0.0 if self.usable() else self._reset_timeout

    async def _wait_for_change(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self._probing = False
        if self.state != CircuitState.CLOSED:
            self._reset_timeout = self.base_reset_timeout
            self._set(CircuitState.CLOSED)

    def failed(self) -> None:
        """A transient failure of the provider."""
        self.consecutive_failures += 1
        if self.state == CircuitState.HALF_OPEN:
            self._probing = False
            self._reset_timeout = min(self.max_reset_timeout, self._reset_timeout * 2)
            self._open()
        elif self.state == CircuitState.CLOSED and (
            self.consecutive_failures >= self.failure_threshold
        ):
            self._open()

    def _open(self) -> None:
        self._retry_at = time.monotonic() + self._reset_timeout
        self.opened_at = time.time()
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state == self.state:
            return
        self.state = state
        self._changed.set()
        (log.warning if state == CircuitState.OPEN else log.info)(
            "circuit.changed",
            provider=self.name,
            state=state,
            failures=self.consecutive_failures,
            reset_in=round(self._reset_timeout, 1) if state == CircuitState.OPEN else None,
        )
        if self.on_change is not None:
            self.on_change(self)


class CircuitTable:
    """Circuit breakers made on demand by key, at most ``capacity`` of them: the least
    recently used is forgotten first. For destinations that callers choose, where the keys
    are not Herald's to bound; forgetting a breaker only means its destination is tried
    again."""

    def __init__(self, make: Callable[[str], CircuitBreaker], *, capacity: int = 10_000) -> None:
        self._make = make
        self.capacity = capacity
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = self._make(key)
            while len(self._breakers) > self.capacity:
                self._breakers.popitem(last=False)
        else:
            self._breakers.move_to_end(key)
        return breaker
