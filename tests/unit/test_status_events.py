"""Status events: which changes are announced under which names, what a subscription wants,
and the document posted (stable bytes, so a signature covers exactly what is read)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from herald.domain import status_events
from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.domain.states import aggregate_status


def test_every_final_delivery_status_has_an_event_and_no_step_on_the_way_does() -> None:
    announced = set(status_events.DELIVERY_EVENTS)
    on_the_way = {DeliveryStatus.PENDING, DeliveryStatus.PROCESSING, DeliveryStatus.RETRY_PENDING}
    assert announced == set(DeliveryStatus) - on_the_way
    assert status_events.DELIVERY_EVENTS[DeliveryStatus.BOUNCED] == "delivery.bounced"
    assert status_events.DELIVERY_EVENTS[DeliveryStatus.DEAD_LETTERED] == "delivery.dead_lettered"


def test_every_status_a_settle_can_reach_has_an_event() -> None:
    """A notification's status events are made when its deliveries settle it: each status
    the aggregate can give (but PENDING) is announced, and none it cannot give is promised."""
    singles = {aggregate_status([s]) for s in DeliveryStatus}
    mixed = {aggregate_status([DeliveryStatus.SENT, DeliveryStatus.FAILED])}
    reachable = (singles | mixed) - {NotificationStatus.PENDING}
    assert set(status_events.NOTIFICATION_EVENTS) == reachable
    assert status_events.NOTIFICATION_EVENTS[NotificationStatus.PARTIALLY_SENT] == (
        "notification.partially_sent"
    )


def test_names_are_checked() -> None:
    assert status_events.type_problem("*") is None
    assert status_events.type_problem("notification.delivered") is None
    problem = status_events.type_problem("notification.opened")
    assert problem is not None
    assert "'notification.opened' is not an event" in problem
    assert status_events.type_problem("x" * 10_000) is not None


def test_a_subscription_wants_what_it_names_or_everything() -> None:
    assert status_events.wants(["*"], "delivery.sent")
    assert status_events.wants(["delivery.sent"], "delivery.sent")
    assert not status_events.wants(["delivery.sent"], "notification.sent")
    assert not status_events.wants([], "delivery.sent")


def test_the_document_is_the_same_bytes_for_the_same_event() -> None:
    at = datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=UTC)
    data = {"status": "SENT", "notification_id": "n1", "user_id": None}
    first = status_events.document("e1", "notification.sent", "acme", at, data)
    second = status_events.document(
        "e1", "notification.sent", "acme", at, dict(reversed(data.items()))
    )
    assert first == second
    assert json.loads(first) == {
        "id": "e1",
        "type": "notification.sent",
        "tenant": "acme",
        "created_at": "2026-12-05T10:00:00.123456Z",
        "data": {"notification_id": "n1", "status": "SENT", "user_id": None},
    }
    assert b" " not in first
