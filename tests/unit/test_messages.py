from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.bus.topics import Topics
from herald.domain.messages import (
    Content,
    DeliveryJob,
    DeliveryStatusChanged,
    NotificationRequested,
    decode,
    encode,
    encode_fields,
)
from herald.domain.models import DeliveryStatus
from herald.errors import PoisonMessageError
from herald.ids import first_uuid7_at, uuid7, uuid7s
from herald.pipeline.envelope import envelope, envelope_fields


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
    parsed = uuid.UUID(ids[1])
    assert (str(parsed), parsed.version, parsed.int >> 80) == (ids[1], 7, 2_000)
    assert parsed.variant == uuid.RFC_4122


def test_uuid7s_are_uuid7s_of_one_millisecond() -> None:
    ids = uuid7s(2000, now_ms=5_000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.int >> 80) == (text, 7, 5_000)
        assert parsed.variant == uuid.RFC_4122
    assert {i[19] for i in ids} == set("89ab")  # the variant's two random bits vary
    assert len({i[20] for i in ids}) == 16  # so do the bits after them
    assert {i[15:18] for i in ids} == {"000"}  # the millisecond's fraction: 0 at a whole ms


def test_uuid7s_made_one_after_another_sort_in_that_order() -> None:
    """The 12 bits after the version are the fraction of the millisecond (about 244 ns steps):
    ids made in one millisecond still sort by time (two requests listed newest first)."""
    made = [uuid7() for _ in range(2000)]
    assert made == sorted(made)
    assert len({i[:13] for i in made}) < len(made)  # many shared a millisecond
    assert uuid7s(1, now_ms=7_000)[0] >= first_uuid7_at(datetime.fromtimestamp(7, UTC))


contents = st.builds(
    Content,
    subject=st.none() | st.text(max_size=10),
    body=st.text(max_size=20),
    data=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=2),
)
requested = st.fixed_dictionaries(
    {
        "notification_id": st.text(max_size=10),
        "user_key": st.text(max_size=10),
        # Nested messages as dicts in their model's order (as Herald builds them).
        "deliveries": st.lists(
            st.builds(
                lambda i, c, r, content: {
                    "delivery_id": i,
                    "channel": c,
                    "recipient": r,
                    "content": content,
                },
                st.text(max_size=10),
                st.sampled_from(["email", "sms"]),
                st.text(max_size=10),
                st.none() | contents,
            ),
            max_size=3,
        ),
        "content": contents,
        "created_at": st.datetimes(timezones=st.just(UTC)),
    },
    optional={
        "tenant_id": st.text(max_size=5),
        "user_id": st.none() | st.text(max_size=5),
        "category": st.none() | st.text(max_size=5),
        "priority": st.sampled_from(["low", "high"]),
        "send_at": st.none() | st.datetimes(timezones=st.just(UTC)),
    },
)


@given(requested)
def test_messages_encoded_from_their_fields_are_the_models_bytes(fields: dict) -> None:
    """encode_fields skips validation, not a byte: defaults, order and nested models alike."""
    model = NotificationRequested(**fields)
    assert encode_fields(NotificationRequested, fields) == encode(model)
    built = envelope_fields("t", "k", NotificationRequested, fields, {"traceparent": "x"})
    assert built == envelope("t", "k", model, {"traceparent": "x"})


def test_a_message_encoded_from_its_fields_needs_the_required_ones() -> None:
    with pytest.raises(KeyError, match="notification_id"):
        encode_fields(NotificationRequested, {"user_key": "u"})


@given(
    subject=st.none() | st.text(),
    body=st.text(),
    html=st.none() | st.text(),
    data=st.dictionaries(
        st.text(), st.integers() | st.text() | st.datetimes(timezones=st.just(UTC))
    ),
    headers=st.dictionaries(st.text(), st.text()),
    unsubscribe=st.booleans(),
)
def test_contents_json_dict_is_its_json_dump(
    subject: str | None,
    body: str,
    html: str | None,
    data: dict[str, object],
    headers: dict[str, str],
    unsubscribe: bool,
) -> None:
    content = Content(
        subject=subject, body=body, html=html, data=data, headers=headers, unsubscribe=unsubscribe
    )
    dumped = content.json_dict()
    assert dumped == content.model_dump(mode="json")
    assert list(dumped) == list(content.model_dump(mode="json"))  # the same order too
    # A field added to Content must be added to this test, and to json_dict and plain.
    assert set(Content.model_fields) == {"subject", "body", "html", "data", "headers"} | {
        "unsubscribe"
    }
    assert content.plain == (content == Content(subject=subject, body=body))
