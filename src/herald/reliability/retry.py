"""The retry policy: given a failure and the attempt number, retry at a time or give up."""

from __future__ import annotations

from dataclasses import dataclass

from herald.errors import DeliveryError
from herald.reliability.backoff import Backoff


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_in: float | None  # seconds from now; None means give up
    reason: str

    @property
    def give_up(self) -> bool:
        return self.retry_in is None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    backoff: Backoff

    @property
    def horizon(self) -> float:
        """The longest a delivery's attempts can be spread over by backoff alone."""
        return sum(self.backoff.ceiling(n) for n in range(1, self.max_attempts))

    def decide(self, error: DeliveryError, attempt: int) -> RetryDecision:
        """`attempt` counts the attempt that just failed, starting at 1."""
        if not error.transient:
            return RetryDecision(None, "permanent")
        if attempt >= self.max_attempts:
            return RetryDecision(None, "exhausted")
        delay = self.backoff.delay(attempt)
        if error.retry_after is not None:
            # The provider told us when; waiting less would only be refused again.
            delay = max(delay, error.retry_after)
        return RetryDecision(delay, "transient")
