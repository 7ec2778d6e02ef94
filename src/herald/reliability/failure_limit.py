"""A limit on failures (wrong guesses), not on requests: a client may succeed as often as it
likes, but after ``burst`` failures it is refused until a failure's token has come back.

It is a token bucket of herald.reliability.ratelimit (shared through Redis when there is
one), where only a failure takes a token. A client with no token left is refused before its
request is even looked at: otherwise a guesser would still learn which guess was right.
"""

from __future__ import annotations

from herald.reliability.ratelimit import RateDecision, RateLimiter


class FailureLimit:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def check(self, key: str) -> RateDecision:
        """Whether ``key`` has a failure left. The buckets have no "peek": this takes a token
        and, when there was one, gives it back (a negative cost)."""
        decision = await self.limiter.acquire(key)
        if decision.allowed:
            await self.limiter.acquire(key, cost=-1.0)
        return decision

    async def failed(self, key: str) -> None:
        await self.limiter.acquire(key)
