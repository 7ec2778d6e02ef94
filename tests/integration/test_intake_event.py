"""The event intake publishes is NotificationRequested exactly as the model writes it (intake
encodes it from its fields without validating them: encode_fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from herald.bus.topics import Topics
from herald.domain.messages import NotificationRequested, decode, encode
from herald.pipeline.envelope import envelope
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.store.database import Database
from herald.store.tables import outbox_events
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
