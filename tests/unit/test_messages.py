from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald.bus.topics import Topics
from herald.domain.messages import Content, DeliveryJob, DeliveryStatusChanged, decode, encode
from herald.domain.models import DeliveryStatus
from herald.errors import PoisonMessageError
from herald.ids import uuid7
from herald.pipeline.envelope import envelope


def _job(**changes: object) -> DeliveryJob:
    job = DeliveryJob(
        delivery_id="d1",
        notification_id="n1",
        channel="email",
        recipient="a@example.com",
        user_key="u1",
        content=Content(subject="Hi", body="Hello"),
    )
    return job.model_copy(update=changes)


def test_round_trip() -> None:
    job = _job(attempt=2)
    assert decode(DeliveryJob, encode(job)) == job


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"type": "delivery.requested"}', b"\xff\xfe"],
)
def test_undecodable_payloads_are_poison(raw: bytes) -> None:
    with pytest.raises(PoisonMessageError):
        decode(DeliveryJob, raw)


def test_a_newer_schema_version_is_poison_but_unknown_fields_are_fine() -> None:
    newer = encode(_job()).replace(b'"schema_version":1', b'"schema_version":2')
    with pytest.raises(PoisonMessageError, match="newer"):
        decode(DeliveryJob, newer)
    extended = encode(_job()).replace(b"{", b'{"added_later":true,', 1)
    assert decode(DeliveryJob, extended) == _job()


def test_envelope_headers_name_the_message() -> None:
    message = envelope(Topics().deliveries("email"), "u1", _job(attempt=3))
    assert message.topic == "herald.deliveries.email"
    assert message.key == "u1"
    assert message.headers["herald-type"] == "delivery.requested"
    assert message.headers["herald-delivery-id"] == "d1"
    assert message.headers["herald-attempt"] == "3"
    status = DeliveryStatusChanged(
        notification_id="n1",
        delivery_id="d1",
        channel="email",
        user_key="u1",
        status=DeliveryStatus.SENT,
        attempts=1,
        occurred_at=datetime.now(UTC),
    )
    assert "herald-attempt" not in envelope(Topics().status, "u1", status).headers


def test_uuid7_is_time_ordered_and_versioned() -> None:
    ids = [uuid7(now_ms=ms) for ms in (1_000, 2_000, 3_000)]
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids)  # version nibble
    assert all(i[19] in "89ab" for i in ids)  # RFC 9562 variant
    assert len({uuid7() for _ in range(1000)}) == 1000
