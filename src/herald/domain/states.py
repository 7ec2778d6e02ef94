"""The delivery state machine, and the notification status derived from the deliveries.

Every statement that changes a delivery's status names the statuses it moves it from through
``moving`` (or ``sources``), so the SQL's guard is this table's: a statement that would make a
move the table forbids fails when it is built (at import, for the prebuilt ones), not in
production. A move the table forbids at run time (a receipt arriving late or out of order) is
simply not made: the guarded UPDATE changes nothing.
"""

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
    # What the provider's receipts say after it accepted the message.
    D.SENT: frozenset({D.DELIVERED, D.BOUNCED, D.COMPLAINED, D.REJECTED, D.UNDELIVERED}),
    # A delivered email can still bounce (the recipient's server accepted, then gave up) and
    # be marked as spam; nothing moves a delivery back to DELIVERED.
    D.DELIVERED: frozenset({D.BOUNCED, D.COMPLAINED}),
    D.BOUNCED: frozenset(),
    D.COMPLAINED: frozenset(),
    D.REJECTED: frozenset(),
    D.UNDELIVERED: frozenset(),
    D.SKIPPED: frozenset(),
    # A failed or dead-lettered delivery can be replayed once its cause is fixed.
    D.FAILED: frozenset({D.PENDING}),
    D.DEAD_LETTERED: frozenset({D.PENDING}),
}

# Statuses a worker may start an attempt from (RETRY_PENDING only once due).
CLAIMABLE: frozenset[D] = frozenset({D.PENDING, D.RETRY_PENDING})
IN_PROGRESS: frozenset[D] = frozenset({D.PENDING, D.PROCESSING, D.RETRY_PENDING})
# Reached the recipient as far as anyone told us (a complaint means it arrived).
REACHED: frozenset[D] = frozenset({D.SENT, D.DELIVERED, D.COMPLAINED})
CONFIRMED: frozenset[D] = frozenset({D.DELIVERED, D.COMPLAINED})
NOT_REACHED: frozenset[D] = frozenset(
    {D.FAILED, D.DEAD_LETTERED, D.BOUNCED, D.REJECTED, D.UNDELIVERED}
)
# What deleting its user cancels at once (SKIPPED); a PROCESSING one after its attempt.
CANCELLABLE: frozenset[D] = frozenset({D.PENDING, D.RETRY_PENDING})


def can_transition(current: D, new: D) -> bool:
    return new in DELIVERY_TRANSITIONS[current]


def moving(to: D, *sources_: D) -> list[D]:
    """``sources_``, for a statement that moves a delivery from them to ``to``: raises if the
    machine forbids one of those moves."""
    forbidden = [s for s in sources_ if not can_transition(s, to)]
    if forbidden:
        names = ", ".join(s.value for s in forbidden)
        raise ValueError(f"a delivery may not move from {names} to {to.value}")
    return list(sources_)


def leaving(source: D, *, to: D) -> D:
    """``source``, for a statement that moves a delivery from it to ``to`` (checked)."""
    (checked,) = moving(to, source)
    return checked


def sources(to: D) -> list[D]:
    """Every status a delivery may move to ``to`` from."""
    return [s for s in D if can_transition(s, to)]


def aggregate_status(deliveries: Iterable[D]) -> N:
    """A notification is PENDING until every delivery has ended, then summarises them:
    DELIVERED once every delivery that went out was confirmed."""
    statuses = list(deliveries)
    if not statuses or any(s in IN_PROGRESS for s in statuses):
        return N.PENDING
    reached = [s for s in statuses if s in REACHED]
    failed = sum(s in NOT_REACHED for s in statuses)
    if reached and failed:
        return N.PARTIALLY_SENT
    if reached:
        return N.DELIVERED if all(s in CONFIRMED for s in reached) else N.SENT
    if failed:
        return N.FAILED
    return N.SKIPPED
