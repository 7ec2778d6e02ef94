from __future__ import annotations

import pytest

from herald.domain.models import DeliveryStatus as D
from herald.domain.models import NotificationStatus as N
from herald.domain.states import DELIVERY_TRANSITIONS, aggregate_status, can_transition


def test_every_status_has_a_transition_entry() -> None:
    assert set(DELIVERY_TRANSITIONS) == set(D)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (D.PENDING, D.PROCESSING, True),
        (D.PROCESSING, D.SENT, True),
        (D.PROCESSING, D.RETRY_PENDING, True),
        (D.RETRY_PENDING, D.PROCESSING, True),
        (D.PROCESSING, D.PROCESSING, True),  # lease takeover
        (D.SENT, D.PROCESSING, False),  # never send twice
        (D.SENT, D.FAILED, False),
        (D.PENDING, D.SENT, False),  # must be claimed first
        (D.SKIPPED, D.PENDING, False),
        (D.FAILED, D.PENDING, True),  # replay
        (D.DEAD_LETTERED, D.PENDING, True),
        (D.RETRY_PENDING, D.SKIPPED, True),  # its user was deleted
        (D.PROCESSING, D.SKIPPED, True),  # its user was deleted, the attempt did not send
        (D.SENT, D.SKIPPED, False),
    ],
)
def test_delivery_transitions(current: D, new: D, allowed: bool) -> None:
    assert can_transition(current, new) is allowed


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([], N.PENDING),
        ([D.PENDING], N.PENDING),
        ([D.SENT, D.RETRY_PENDING], N.PENDING),
        ([D.SENT, D.PROCESSING], N.PENDING),
        ([D.SENT], N.SENT),
        ([D.SENT, D.SKIPPED], N.SENT),
        ([D.SENT, D.FAILED], N.PARTIALLY_SENT),
        ([D.SENT, D.DEAD_LETTERED, D.SKIPPED], N.PARTIALLY_SENT),
        ([D.FAILED], N.FAILED),
        ([D.DEAD_LETTERED, D.SKIPPED], N.FAILED),
        ([D.SKIPPED, D.SKIPPED], N.SKIPPED),
    ],
)
def test_aggregate_status(deliveries: list[D], expected: N) -> None:
    assert aggregate_status(deliveries) == expected
