"""The email worker's handler against a real database and a real SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from herald.bus.base import Message
from herald.bus.topics import Topics
from herald.channels.smtp import SmtpProvider, parse_smtp_url
from herald.clock import utcnow
from herald.domain.messages import Content, DeliveryJob, encode
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.failover import FailoverChain, ProviderSlot
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.retries import RetrySchedule
from herald.pipeline.stages.deliver import ChannelWorker
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.reliability.backoff import Backoff
from herald.reliability.circuit import CircuitBreaker, CircuitState
from herald.reliability.retry import RetryPolicy
from herald.store import deliveries
from herald.store.database import Database
from herald.store.notifications import NotificationRecord
from herald.store.tables import deliveries as deliveries_table
from herald.store.tables import notifications as notifications_table
from herald.store.tables import outbox_events
from herald.wakeup import Wakeup
from tests.smtp_sink import SmtpSink


@dataclass
class Fixture:
    db: Database
    worker: ChannelWorker
    intake: Intake
    sink: SmtpSink


@pytest.fixture
async def env(db: Database, smtp_sink: SmtpSink) -> AsyncIterator[Fixture]:
    provider = SmtpProvider(parse_smtp_url(smtp_sink.url), sender="Herald <herald@localhost>")
    policy = RetryPolicy(3, Backoff(0.05, 0.1))
    units = Units(db, Wakeup())  # no bus: what the worker publishes stays in the outbox
    worker = ChannelWorker(
        units,
        Topics(),
        provider,
        policy,
        lease_seconds=2.5,  # a send gets 2 s: room for a loaded CI machine
        dead_letters=DeadLetterOffice(units, Topics()),
        retries=RetrySchedule(Topics(), retry_topic=False),
    )
    yield Fixture(db, worker, Intake(units, Topics(), idempotency_ttl=60), smtp_sink)
    await provider.close()


async def accept(env: Fixture) -> NotificationRecord:
    captured: list[NotificationRecord] = []

    def render(record: NotificationRecord) -> dict[str, str]:
        captured.append(record)
        return {"id": record.id}

    request = NotificationSpec.email("a@example.com", "Hi", "Hello")
    await env.intake.submit(request, render)
    return captured[0]


def job_message(record: NotificationRecord, attempt: int = 0) -> Message:
    delivery = record.deliveries[0]
    job = DeliveryJob(
        delivery_id=delivery.id,
        notification_id=record.id,
        channel="email",
        recipient=delivery.recipient,
        user_key="a@example.com",
        content=Content(subject="Hi", body="Hello"),
        attempt=attempt,
    )
    return Message("herald.deliveries.email", 0, 0, job.user_key, encode(job), {}, utcnow())


async def delivery_row(env: Fixture, delivery_id: str) -> sa.Row[tuple[object, ...]]:
    async with env.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(deliveries_table).where(deliveries_table.c.id == delivery_id)
            )
        ).one()
    return row


async def test_a_lease_held_by_a_dead_worker_is_waited_out_then_taken_over(env: Fixture) -> None:
    record = await accept(env)
    delivery_id = record.deliveries[0].id
    now = utcnow()
    async with env.db.write() as conn:  # another worker claims it, then dies before sending
        await deliveries.claim(
            conn,
            delivery_id,
            job_attempt=0,
            now=now,
            lease_until=now + timedelta(seconds=0.5),
            owner="another-process",
        )

    await env.worker.handle([job_message(record)])

    row = await delivery_row(env, delivery_id)
    assert (row.status, row.attempts) == ("SENT", 2)
    assert len(env.sink.messages()) == 1


async def test_claiming_many_at_once_decides_each_as_claiming_it_alone_would(
    env: Fixture,
) -> None:
    pending, retrying, sent = [(await accept(env)).deliveries[0].id for _ in range(3)]
    now = utcnow()
    async with env.db.write() as conn:
        await conn.execute(  # due for its second attempt, scheduled by a job of attempt 1
            sa.update(deliveries_table)
            .where(deliveries_table.c.id == retrying)
            .values(status="RETRY_PENDING", attempts=1, next_attempt_at=now)
        )
        await conn.execute(
            sa.update(deliveries_table)
            .where(deliveries_table.c.id == sent)
            .values(status="SENT", attempts=1)
        )
    jobs = [(pending, 0), (retrying, 0), (retrying, 1), (sent, 0), (pending, 0), ("nope", 0)]
    async with env.db.write() as conn:
        claims = await deliveries.claim_many(
            conn, jobs, now=now, lease_until=now + timedelta(minutes=1), owner="other"
        )
    outcomes = [(c.outcome, c.attempts) for c in claims]
    assert outcomes == [
        (deliveries.ClaimOutcome.CLAIMED, 1),
        (deliveries.ClaimOutcome.STALE, 1),  # a duplicate of an older attempt's job
        (deliveries.ClaimOutcome.CLAIMED, 2),  # (the same delivery's current job: next round)
        (deliveries.ClaimOutcome.FINISHED, 1),
        (deliveries.ClaimOutcome.BUSY, 0),  # its first job in the list holds it now
        (deliveries.ClaimOutcome.MISSING, 0),
    ]


async def test_finishing_many_as_sent_changes_only_the_attempts_still_under_way(
    env: Fixture,
) -> None:
    """One statement executed per row: the rows still under way at that attempt change, each
    with its own provider message id; the others stay as they are."""
    ids = [(await accept(env)).deliveries[0].id for _ in range(4)]
    now = utcnow()
    async with env.db.write() as conn:
        claims = await deliveries.claim_many(
            conn, [(i, 0) for i in ids], now=now, lease_until=now + timedelta(minutes=1), owner="w"
        )
    assert [c.outcome for c in claims] == [deliveries.ClaimOutcome.CLAIMED] * 4
    async with env.db.write() as conn:  # the last one taken back: no longer under way
        await conn.execute(
            sa.update(deliveries_table)
            .where(deliveries_table.c.id == ids[3])
            .values(status="RETRY_PENDING")
        )
    sent = [
        deliveries.Sent(ids[0], 1, "smtp", "<m0@x>"),
        deliveries.Sent(ids[1], 1, "smtp", None),
        deliveries.Sent(ids[2], 2, "smtp", "<stale@x>"),  # not the attempt under way
        deliveries.Sent(ids[3], 1, "smtp", "<m3@x>"),
    ]
    async with env.db.write() as conn:
        await deliveries.finish_sent(conn, sent, now)
    rows = [await delivery_row(env, i) for i in ids]
    assert [(r.status, r.provider, r.provider_message_id) for r in rows] == [
        ("SENT", "smtp", "<m0@x>"),
        ("SENT", "smtp", None),
        ("PROCESSING", None, None),
        ("RETRY_PENDING", None, None),
    ]
    assert rows[0].sent_at == now
    assert rows[0].lease_owner is None
    assert rows[2].sent_at is None


async def test_a_worker_takes_back_its_own_claim_at_once(env: Fixture) -> None:
    # This worker claimed it, then could not record the outcome (the database went away);
    # retrying the job must not wait out its own 10-minute lease.
    record = await accept(env)
    now = utcnow()
    async with env.db.write() as conn:
        await deliveries.claim(
            conn,
            record.deliveries[0].id,
            job_attempt=0,
            now=now,
            lease_until=now + timedelta(minutes=10),
            owner=env.worker.owner,
        )
    await asyncio.wait_for(env.worker.handle([job_message(record)]), 30)
    assert (await delivery_row(env, record.deliveries[0].id)).status == "SENT"


async def test_a_job_for_a_sent_delivery_sends_nothing(env: Fixture) -> None:
    record = await accept(env)
    await env.worker.handle([job_message(record)])
    await env.worker.handle([job_message(record)])
    assert len(env.sink.messages()) == 1
    assert (await delivery_row(env, record.deliveries[0].id)).attempts == 1


async def test_a_stale_job_does_not_jump_the_scheduled_retry(env: Fixture) -> None:
    env.sink.fail_data(1)
    record = await accept(env)
    await env.worker.handle([job_message(record)])  # attempt 1 fails: retry scheduled
    row = await delivery_row(env, record.deliveries[0].id)
    assert (row.status, row.attempts) == ("RETRY_PENDING", 1)

    await env.worker.handle([job_message(record, attempt=0)])  # an old duplicate
    assert (await delivery_row(env, record.deliveries[0].id)).status == "RETRY_PENDING"
    assert env.sink.messages() == []

    async with env.db.read() as conn:  # the scheduled retry waits in the outbox
        first, retry = (
            await conn.execute(
                sa.select(outbox_events)
                .where(outbox_events.c.topic == "herald.deliveries.email")
                .order_by(outbox_events.c.id)
            )
        ).all()
    assert b'"attempt":0' in first.payload  # intake's: nothing was left to route
    assert retry.available_at > row.last_attempt_at
    assert b'"attempt":1' in retry.payload

    await env.worker.handle([job_message(record, attempt=1)])  # the retry itself
    row = await delivery_row(env, record.deliveries[0].id)
    assert (row.status, row.attempts) == ("SENT", 2)
    assert len(env.sink.messages()) == 1


async def test_a_job_for_an_unknown_delivery_is_dropped(env: Fixture) -> None:
    record = await accept(env)
    async with env.db.write() as conn:
        await conn.execute(sa.delete(deliveries_table))
    await env.worker.handle([job_message(record)])
    assert env.sink.messages() == []


async def test_a_probe_with_nothing_to_send_leaves_the_circuit_free_to_probe(
    env: Fixture,
) -> None:
    provider = env.worker.providers.slots[0].provider
    breaker = CircuitBreaker(provider.name, failure_threshold=1, reset_timeout=0.05)
    env.worker.providers = FailoverChain([ProviderSlot(provider, breaker)])
    breaker.failed()  # open: the next job after 0.05 s is the probe
    gone = await accept(env)
    async with env.db.write() as conn:
        await conn.execute(sa.delete(deliveries_table))
    await env.worker.handle([job_message(gone)])  # the probe's delivery is gone: no send

    # Had the probe stayed taken, the circuit would wait for it forever.
    record = await accept(env)
    await asyncio.wait_for(env.worker.handle([job_message(record)]), 10)
    assert (await delivery_row(env, record.deliveries[0].id)).status == "SENT"
    assert breaker.state == CircuitState.CLOSED


async def test_a_send_that_would_outlive_the_lease_is_cut_short(env: Fixture) -> None:
    env.sink.delay = 3.0  # longer than 80% of the 2.5 s lease
    record = await accept(env)
    await env.worker.handle([job_message(record)])
    row = await delivery_row(env, record.deliveries[0].id)
    assert (row.status, row.attempts) == ("RETRY_PENDING", 1)
    assert "longer than 2s" in (row.last_error or "")

    env.sink.delay = 0
    await env.worker.handle([job_message(record, attempt=1)])  # the scheduled retry
    row = await delivery_row(env, record.deliveries[0].id)
    assert row.status == "SENT", row.last_error


async def test_a_delivery_cancelled_under_way_ends_skipped_at_its_claim_and_the_status_follows(
    env: Fixture,
) -> None:
    record = await accept(env)
    delivery_id = record.deliveries[0].id
    async with env.db.write() as conn:  # its user was deleted while its job was on its way
        await conn.execute(
            sa.update(deliveries_table)
            .where(deliveries_table.c.id == delivery_id)
            .values(skip_reason="user_deleted")
        )
    await env.worker.handle([job_message(record)])
    assert (await delivery_row(env, delivery_id)).status == "SKIPPED"
    async with env.db.read() as conn:
        status = await conn.scalar(
            sa.select(notifications_table.c.status).where(notifications_table.c.id == record.id)
        )
    assert status == "SKIPPED"  # settled in the claim's transaction, not left PENDING
    assert env.sink.messages() == []
