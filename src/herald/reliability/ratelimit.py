"""Token buckets: in process (embedded), or in Redis so that every API process shares them.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a request
takes one. When Redis cannot be reached the Redis limiter falls back to a bucket in this
process: callers keep being served (fail-open) but never without any limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0  # seconds until enough tokens are back


class RateLimiter(Protocol):
    rate: float  # tokens per second

    async def acquire(self, key: str, cost: float = 1.0) -> RateDecision: ...


class LocalTokenBucket:
    """Buckets in this process, least recently used dropped beyond ``max_keys``."""

    def __init__(self, *, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def acquire(self, key: str, cost: float = 1.0) -> RateDecision:
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            decision = RateDecision(True)
            tokens -= cost
        else:
            decision = RateDecision(False, (cost - tokens) / self.rate)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return decision


# Uses the Redis server's clock, so API processes on different hosts agree on refills.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisTokenBucket:
    def __init__(self, redis: Redis, *, rate: float, burst: float, prefix: str) -> None:
        self.redis = redis
        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._fallback = LocalTokenBucket(rate=rate, burst=burst)
        self._degraded = False

    async def acquire(self, key: str, cost: float = 1.0) -> RateDecision:
        from redis.exceptions import RedisError

        try:
            allowed, wait = await self._script(
                keys=[f"{self.prefix}ratelimit:{key}"], args=[self.rate, self.burst, cost]
            )
        except (RedisError, OSError) as exc:
            if not self._degraded:
                log.warning("ratelimit.redis_unavailable", fallback="in-process", error=str(exc))
                self._degraded = True
            return await self._fallback.acquire(key, cost)
        if self._degraded:
            log.info("ratelimit.redis_back")
            self._degraded = False
        return RateDecision(bool(allowed), float(wait))


class SendThrottle(Protocol):
    """A provider's rate limit, as the worker waits for it."""

    @property
    def rate(self) -> float:
        """About the sends a second it lets go, at most."""
        ...

    def turn(self) -> AbstractAsyncContextManager[float]:
        """A send's turn: entered once the send may go (giving how long that took, in
        seconds), left once it is over (answered or failed)."""
        ...


# What a provider counts is its sends' arrivals, and between the decision to send and the
# arrival lie a connection, a request and the network, and on a busy host an event loop: slower
# for one send than for another (a delay of 100 ms is nothing while the router takes a
# backlog). In one process the pacer knows when each send is over (answered: it has arrived),
# and lets a send go only a second after the one `limit` sends before it was over, which holds
# whatever the delays. A limit shared by processes through Redis cannot know that: its sends
# are spaced by a second and this margin over the limit, so a send may take up to this much
# longer to arrive than the one a second after it (a limit of 100/s is sent at 97/s).
TRANSIT_MARGIN = 0.03


def paced_rate(limit: float) -> float:
    """The rate a shared limit of ``limit`` a second is paced at (see TRANSIT_MARGIN)."""
    return limit / (1.0 + TRANSIT_MARGIN)


@dataclass(slots=True)
class _Send:
    over: asyncio.Event
    over_at: float = 0.0  # monotonic, once ``over`` is set


class LocalPacer:
    """A provider's rate limit in one process: each send reserves the next slot on a schedule
    ``1/limit`` apart, so waiters do not race for one token and a timer that fires late does
    not slow the sends after it; and no send goes before a second has passed since the send
    ``limit`` sends before it was over, so the provider never counts more than its limit in
    any second, however long each send took to reach it (see TRANSIT_MARGIN)."""

    def __init__(self, limit: float) -> None:
        self.rate = limit
        self._next_slot = 0.0  # monotonic time of the next free slot
        self._sends: deque[_Send] = deque(maxlen=max(1, int(limit)))  # the last let go

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[float]:
        started = time.monotonic()
        slot = max(started, self._next_slot)
        self._next_slot = slot + 1.0 / self.rate
        while True:
            now = time.monotonic()
            wait = slot - now
            if len(self._sends) == self._sends.maxlen:
                oldest = self._sends[0]
                if not oldest.over.is_set():
                    await oldest.over.wait()  # still on its way: it may arrive any time
                    continue
                wait = max(wait, oldest.over_at + 1.0 - now)
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        send = _Send(asyncio.Event())  # no await since the check: nobody overtook
        self._sends.append(send)
        try:
            yield time.monotonic() - started
        finally:
            send.over_at = time.monotonic()
            send.over.set()


class Throttle:
    """Wait for a token instead of refusing: a provider's rate limit, shared or local.

    Memory stays bounded: callers wait in the worker's bounded in-flight work, and when that
    is full the worker pauses its partitions.
    """

    def __init__(self, limiter: RateLimiter, key: str) -> None:
        self.limiter = limiter
        self.key = key

    @property
    def rate(self) -> float:
        return self.limiter.rate

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[float]:
        yield await self.take()

    async def take(self) -> float:
        """Returns how long it waited, in seconds."""
        waited = 0.0
        while True:
            decision = await self.limiter.acquire(self.key)
            if decision.allowed:
                return waited
            pause = max(decision.retry_after, 0.001)
            waited += pause
            await asyncio.sleep(pause)
