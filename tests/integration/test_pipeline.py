"""The pipeline in one event loop: API, outbox, relay, router, worker, SMTP, status."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from herald.domain.messages import Content, DeliveryJob, DeliveryStatusChanged, decode
from herald.domain.models import DeliveryStatus
from herald.pipeline.envelope import envelope
from herald.store.tables import outbox_events
from tests.pipeline_harness import Pipeline, PipelineFactory


async def test_seed_request_arrives_as_one_email_and_turns_sent(pipeline: Pipeline) -> None:
    accepted = await pipeline.send()
    done = await pipeline.wait_until_done(accepted["id"])

    [mail] = await pipeline.sink.wait_for(1)
    delivery = done["deliveries"][0]
    assert mail.rcpt_tos == ["a@example.com"]
    assert mail.message["Subject"] == "Welcome"
    assert mail.message.get_content().strip() == "Welcome to Herald"
    assert mail.message_id == f"<{delivery['id']}@localhost>"
    assert mail.notification_id == accepted["id"]

    assert done["status"] == "SENT"
    assert done["completed_at"] is not None
    assert delivery["status"] == "SENT"
    assert delivery["attempts"] == 1
    assert delivery["provider"] == "smtp"
    assert delivery["sent_at"] is not None

    published = {
        topic.rsplit(".", 2)[-2] + "." + topic.rsplit(".", 1)[-1]
        for topic, _ in await pipeline.published()
    }
    # Nothing left to route (an inline recipient, now): intake published the job itself; and
    # the notification's status was settled with its delivery's: no status event either.
    assert published == {"deliveries.email"}


async def test_status_events_go_out_when_asked_for_and_the_status_is_settled_either_way(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(status_events=True) as pipeline:
        pipeline.sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such mailbox"
        sent = await pipeline.send()
        failed = await pipeline.send(recipient="gone@example.com")
        assert (await pipeline.wait_until_done(sent["id"]))["status"] == "SENT"
        assert (await pipeline.wait_until_done(failed["id"]))["status"] == "FAILED"
        events = [
            decode(DeliveryStatusChanged, value)
            for topic, value in await pipeline.published_values()
            if topic.endswith("notifications.status")
        ]
    assert {(e.notification_id, e.status) for e in events} == {
        (sent["id"], DeliveryStatus.SENT),
        (failed["id"], DeliveryStatus.DEAD_LETTERED),
    }


async def test_transient_failures_are_retried_until_sent(pipeline: Pipeline) -> None:
    pipeline.sink.fail_data(2)  # 451 twice, then accept
    accepted = await pipeline.send()
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "SENT"
    assert done["deliveries"][0]["attempts"] == 3
    assert "451" in done["deliveries"][0]["last_error"]
    assert len(await pipeline.sink.wait_for(1)) == 1


async def test_rejected_recipient_is_dead_lettered_after_one_attempt(pipeline: Pipeline) -> None:
    pipeline.sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    accepted = await pipeline.send(recipient="nobody@example.com")
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "FAILED"
    [delivery] = done["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("DEAD_LETTERED", 1)
    assert "550" in delivery["last_error"]
    assert pipeline.sink.messages() == []
    [letter] = await pipeline.dead_letters()
    assert (letter.kind, letter.reason, letter.delivery_id) == (
        "delivery",
        "permanent",
        delivery["id"],
    )
    assert (letter.error_class, letter.provider, letter.attempts) == (
        "PermanentDeliveryError",
        "smtp",
        1,
    )


async def test_retries_give_up_after_the_configured_attempts(pipeline: Pipeline) -> None:
    pipeline.sink.fail_data(1000)
    accepted = await pipeline.send()
    done = await pipeline.wait_until_done(accepted["id"])
    [delivery] = done["deliveries"]
    assert (done["status"], delivery["status"], delivery["attempts"]) == (
        "FAILED",
        "DEAD_LETTERED",
        3,
    )
    [letter] = await pipeline.dead_letters()
    assert (letter.reason, letter.attempts) == ("exhausted", 3)
    assert letter.first_failed_at < letter.last_failed_at


async def test_a_duplicated_job_sends_one_email(pipeline: Pipeline) -> None:
    accepted = await pipeline.send()
    await pipeline.wait_until_done(accepted["id"])
    delivery = accepted["deliveries"][0]
    job = DeliveryJob(
        delivery_id=delivery["id"],
        notification_id=accepted["id"],
        channel="email",
        recipient="a@example.com",
        user_key="a@example.com",
        content=Content(subject="Welcome", body="Welcome to Herald"),
    )
    topics = pipeline.runtime.topics
    await pipeline.runtime.bus.publish(
        [envelope(topics.deliveries("email"), job.user_key, job)] * 2
    )
    second = await pipeline.send(subject="After the duplicates")  # same key: queued behind them
    await pipeline.wait_until_done(second["id"])
    subjects = [m.message["Subject"] for m in pipeline.sink.messages()]
    assert subjects == ["Welcome", "After the duplicates"]


async def test_smtp_server_down_then_back(pipeline: Pipeline) -> None:
    pipeline.sink.stop()
    accepted = await pipeline.send()
    await pipeline.wait_for_delivery(accepted["id"], lambda d: d["status"] == "RETRY_PENDING")
    pipeline.sink.start()
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "SENT"
    assert done["deliveries"][0]["attempts"] >= 2
    assert len(await pipeline.sink.wait_for(1)) == 1


async def test_poison_message_is_dead_lettered_and_does_not_block(pipeline: Pipeline) -> None:
    from herald.bus.base import OutgoingMessage

    topics = pipeline.runtime.topics
    await pipeline.runtime.bus.publish(
        [OutgoingMessage(topics.deliveries("email"), "a@example.com", b"\x00 not json")]
    )
    accepted = await pipeline.send()  # same key, so the same partition, behind the poison
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "SENT"
    [letter] = await pipeline.dead_letters()
    assert (letter.kind, letter.reason, letter.payload) == ("message", "poison", b"\x00 not json")
    assert letter.source is not None
    assert letter.source.startswith(f"{topics.deliveries('email')}[")


async def published_for_traced(
    pipeline: Pipeline, recipient: str, trace: str
) -> list[tuple[str, dict[str, str]]]:
    """POST one notification continuing the caller's ``trace``; once it is done, the topic and
    headers of every message published for it."""
    response = await pipeline.http.post(
        "/api/v1/notifications",
        json={"recipient": recipient, "subject": "Traced", "message": "x"},
        headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"},
    )
    notification_id = response.json()["id"]
    await pipeline.wait_until_done(notification_id)
    return [
        (topic, headers)
        for topic, headers in await pipeline.published()
        if headers.get("herald-notification-id") == notification_id
    ]


async def test_the_callers_trace_follows_the_notification_through_every_message(
    pipeline: Pipeline,
) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    mine = await published_for_traced(pipeline, "a@example.com", trace)
    assert {topic.rsplit(".", 2)[-2] + "." + topic.rsplit(".", 1)[-1] for topic, _ in mine} == {
        "deliveries.email",
    }
    assert {headers["traceparent"][3:35] for _, headers in mine} == {trace}
    assert len({headers["traceparent"] for _, headers in mine}) == len(mine)  # a span each


async def test_a_dead_letter_carries_the_trace_of_what_failed(pipeline: Pipeline) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    pipeline.sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such mailbox"
    mine = await published_for_traced(pipeline, "gone@example.com", trace)
    [headers] = [headers for topic, headers in mine if topic.endswith("deadletter")]
    assert headers["traceparent"][3:35] == trace


# Kafka's only: the embedded bus takes the job in intake's own transaction, with no outbox row.
@pytest.mark.parametrize(
    "start_pipeline",
    [pytest.param("kafka-postgres", marks=[pytest.mark.kafka, pytest.mark.postgres])],
    indirect=True,
)
async def test_the_relay_role_leaves_no_outbox_rows_with_the_default_retention(
    start_pipeline: PipelineFactory,
) -> None:
    """HERALD_OUTBOX_RETENTION_SECONDS=0 (the default): `herald relay` deletes each outbox row
    as it publishes it (the harness otherwise keeps them, to read them back)."""
    async with start_pipeline(outbox_retention_seconds=0.0) as pipeline:
        accepted = await pipeline.send()
        assert (await pipeline.wait_until_done(accepted["id"]))["status"] == "SENT"
        async with pipeline.runtime.db.read() as conn:
            left = await conn.scalar(sa.select(sa.func.count()).select_from(outbox_events))
    assert left == 0
