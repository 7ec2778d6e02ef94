from __future__ import annotations

import random

import pytest

from herald.errors import PermanentDeliveryError, TransientDeliveryError
from herald.reliability.backoff import Backoff
from herald.reliability.retry import RetryPolicy


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=10.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff.ceiling(10_000) == 10  # no overflow for absurd attempt counts


def test_full_jitter_stays_within_the_ceiling() -> None:
    backoff, rng = Backoff(base=0.5, cap=60.0), random.Random(7)
    delays = [backoff.delay(4, rng) for _ in range(2000)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.5  # spread over the whole range
    assert min(delays) < 0.5


def test_transient_errors_retry_until_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3, backoff=Backoff(1.0, 10.0))
    error = TransientDeliveryError("timeout")
    assert not policy.decide(error, 1).give_up
    assert not policy.decide(error, 2).give_up
    decision = policy.decide(error, 3)
    assert decision.give_up
    assert decision.reason == "exhausted"


def test_permanent_errors_never_retry() -> None:
    policy = RetryPolicy(max_attempts=10, backoff=Backoff(1.0, 10.0))
    decision = policy.decide(PermanentDeliveryError("550 no such user"), 1)
    assert decision.give_up
    assert decision.reason == "permanent"


@pytest.mark.parametrize("retry_after", [30.0, 0.0])
def test_retry_after_is_a_lower_bound(retry_after: float) -> None:
    policy = RetryPolicy(max_attempts=5, backoff=Backoff(1.0, 2.0))
    decision = policy.decide(TransientDeliveryError("429", retry_after=retry_after), 1)
    assert decision.retry_in is not None
    assert decision.retry_in >= retry_after
    assert decision.retry_in <= max(retry_after, 1.0)
