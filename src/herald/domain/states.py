"""State machines for deliveries and the notification status derived from them."""

from __future__ import annotations

from collections.abc import Iterable

from herald.domain.models import DeliveryStatus as D
from herald.domain.models import NotificationStatus as N

# -> SKIPPED from PROCESSING or RETRY_PENDING: cancelled because its user was deleted (from
# PROCESSING only once the attempt under way has ended or its lease lapsed).
DELIVERY_TRANSITIONS: dict[D, frozenset[D]] = {
    D.PENDING: frozenset({D.PROCESSING, D.SKIPPED, D.FAILED, D.DEAD_LETTERED}),
    # PROCESSING -> PROCESSING: another worker takes over after the lease expired.
    D.PROCESSING: frozenset(
        {D.PROCESSING, D.SENT, D.RETRY_PENDING, D.FAILED, D.DEAD_LETTERED, D.SKIPPED}
    ),
    D.RETRY_PENDING: frozenset({D.PROCESSING, D.FAILED, D.DEAD_LETTERED, D.SKIPPED}),
    D.SENT: frozenset(),
    D.SKIPPED: frozenset(),
    # A failed or dead-lettered delivery can be replayed once its cause is fixed.
    D.FAILED: frozenset({D.PENDING}),
    D.DEAD_LETTERED: frozenset({D.PENDING}),
}

# Statuses a worker may start an attempt from (RETRY_PENDING only once due).
CLAIMABLE: frozenset[D] = frozenset({D.PENDING, D.RETRY_PENDING})
IN_PROGRESS: frozenset[D] = frozenset({D.PENDING, D.PROCESSING, D.RETRY_PENDING})
UNDELIVERED: frozenset[D] = frozenset({D.FAILED, D.DEAD_LETTERED})
# What deleting its user cancels at once (SKIPPED); a PROCESSING one after its attempt.
CANCELLABLE: frozenset[D] = frozenset({D.PENDING, D.RETRY_PENDING})


def can_transition(current: D, new: D) -> bool:
    return new in DELIVERY_TRANSITIONS[current]


def aggregate_status(deliveries: Iterable[D]) -> N:
    """A notification is PENDING until every delivery has ended, then summarises them."""
    statuses = list(deliveries)
    if not statuses or any(s in IN_PROGRESS for s in statuses):
        return N.PENDING
    sent = sum(s == D.SENT for s in statuses)
    failed = sum(s in UNDELIVERED for s in statuses)
    if sent and failed:
        return N.PARTIALLY_SENT
    if sent:
        return N.SENT
    if failed:
        return N.FAILED
    return N.SKIPPED
