"""The event intake publishes is NotificationRequested exactly as the model writes it (intake
encodes it from its fields without validating them: encode_fields)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.domain.messages import DeliveryJob, NotificationRequested, decode, encode
from herald.pipeline.envelope import envelope
from herald.pipeline.planning import NotificationSpec, Planner
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store.database import Database
from herald.store.tables import notification_events, outbox_events
from herald.store.users import Profile
from herald.wakeup import Wakeup


async def test_the_requested_event_is_the_models_bytes_and_headers(db: Database) -> None:
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60)
    spec = NotificationSpec(
        user_id=None,
        contacts=NotificationSpec.email("a@example.com", "s", "b").contacts,
        channels=("email",),
        subject="Hi",
        body="Hello",
        category="orders",
        priority="high",
        send_at=datetime.now(UTC) + timedelta(hours=1),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    await intake.submit(spec, lambda r: {"id": r.id})
    async with db.read() as conn:
        (row,) = (await conn.execute(sa.select(outbox_events))).all()

    event = decode(NotificationRequested, row.payload)
    assert (event.category, event.priority, event.send_at) == ("orders", "high", spec.send_at)
    assert [d.recipient for d in event.deliveries] == ["a@example.com"]
    assert row.payload == encode(event)  # the model's fields, order and defaults
    expected = envelope(row.topic, row.key, event, {"traceparent": spec.traceparent})
    assert row.headers == dict(expected.headers)


def _inline(**changes: object) -> NotificationSpec:
    spec = NotificationSpec.email("a@example.com", "Hi", "Hello")
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


async def test_with_nothing_left_to_route_intake_publishes_the_jobs_the_router_would(
    db: Database,
) -> None:
    """An inline recipient, now, on an uncapped channel: the job itself, the model's bytes,
    and the journal's "routed" step; the rest goes to the router."""
    intake = Intake(Units(db, Wakeup()), Topics(), idempotency_ttl=60, capped_channels=["sms"])
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    direct = await intake.submit(
        _inline(traceparent=trace, category="orders"), lambda r: {"id": r.id}
    )
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = await intake.submit(_inline(send_at=later), lambda r: {"id": r.id})
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(outbox_events).order_by(outbox_events.c.id))).all()
        steps = (await conn.execute(sa.select(notification_events))).all()
    assert [row.topic for row in rows] == [Topics().deliveries("email"), Topics().requested]

    job = decode(DeliveryJob, rows[0].payload)
    assert (job.notification_id, job.recipient, job.user_key) == (
        direct.body["id"],
        "a@example.com",
        "a@example.com",
    )
    assert (job.category, job.content.subject, job.content.body) == ("orders", "Hi", "Hello")
    assert rows[0].payload == encode(job)
    assert rows[0].headers == dict(
        envelope(rows[0].topic, rows[0].key, job, {"traceparent": trace}).headers
    )
    assert decode(NotificationRequested, rows[1].payload).notification_id == scheduled.body["id"]
    assert [(s.notification_id, s.step, s.detail) for s in steps] == [
        (direct.body["id"], "routed", "to email")
    ]


async def test_a_capped_channels_delivery_is_left_to_the_router_and_the_rest_is_not(
    db: Database,
) -> None:
    """By channel: an inline recipient's email job goes out from intake, its SMS (whose daily
    cap the router counts) in a notification.requested event of that delivery alone."""
    planner = Planner(channels=("email", "sms"), critical_categories=frozenset(), public_url="")
    intake = Intake(
        Units(db, Wakeup()), Topics(), idempotency_ttl=60, planner=planner, capped_channels=["sms"]
    )
    spec = _inline(
        contacts=Profile(email="a@example.com", phone="+15551234567"), channels=("email", "sms")
    )
    accepted = await intake.submit(spec, lambda r: {"id": r.id, "deliveries": r.deliveries})
    email, sms = accepted.body["deliveries"]
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(outbox_events).order_by(outbox_events.c.id))).all()
    assert [row.topic for row in rows] == [Topics().deliveries("email"), Topics().requested]
    assert decode(DeliveryJob, rows[0].payload).delivery_id == email.id
    event = decode(NotificationRequested, rows[1].payload)
    assert [(d.delivery_id, d.channel) for d in event.deliveries] == [(sms.id, "sms")]
