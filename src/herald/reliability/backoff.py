"""Exponential backoff with full jitter.

See the AWS Architecture Blog post "Exponential Backoff And Jitter".
."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float

    def ceiling(self, attempt: int) -> float:
        """The longest wait after the given attempt (1 = first failure)."""
        exponent = min(max(0, attempt - 1), 60)  # 2**60 already exceeds any sane cap
        return float(min(self.cap, self.base * 2**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A random wait in [0, ceiling]: spreads retries so failures don't synchronise."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))
