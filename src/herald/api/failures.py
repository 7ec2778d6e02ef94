"""Per-address limits on failures (wrong tokens, forged signatures) for the endpoints that take
no API key: after a few, every request from that address is a 429 until a failure's token comes
back, so a guesser cannot learn which guess was right (reliability/failure_limit)."""

from __future__ import annotations

from typing import Final

from fastapi import Request

from herald.api.context import runtime_of
from herald.errors import RateLimitedError
from herald.reliability.failure_limit import FailureLimit
from herald.reliability.ratelimit import LocalTokenBucket, RateLimiter, RedisTokenBucket

# Failures one address may make before it is refused; one more a minute.
FAILURES_ALLOWED: Final = 5
FAILURE_REFILL_PER_SECOND: Final = 1 / 60


class AddressFailures:
    """The failures of one kind (``name``) counted per client address."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def check(self, request: Request) -> None:
        """Refuse (429) an address that has no failure left."""
        decision = await self._limit(request).check(self._key(request))
        if not decision.allowed:
            raise RateLimitedError(decision.retry_after)

    async def failed(self, request: Request) -> None:
        await self._limit(request).failed(self._key(request))

    def _key(self, request: Request) -> str:
        return f"{self.name}-failures:addr:" + (
            request.client.host if request.client else "unknown"
        )

    def _limit(self, request: Request) -> FailureLimit:
        """This app's limit, shared through Redis by every API process when there is one."""
        state = request.app.state
        limits: dict[str, FailureLimit] | None = getattr(state, "failure_limits", None)
        if limits is None:
            limits = state.failure_limits = {}
        found = limits.get(self.name)
        if found is None:
            runtime = runtime_of(request)
            rate, burst = FAILURE_REFILL_PER_SECOND, float(FAILURES_ALLOWED)
            limiter: RateLimiter
            if runtime.redis is None:
                limiter = LocalTokenBucket(rate=rate, burst=burst)
            else:
                prefix = runtime.settings.redis_prefix
                limiter = RedisTokenBucket(runtime.redis, rate=rate, burst=burst, prefix=prefix)
            found = limits[self.name] = FailureLimit(limiter)
        return found
