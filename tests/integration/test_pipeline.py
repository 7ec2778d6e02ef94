"""The pipeline in one event loop: API, outbox, relay, router, worker, SMTP, status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from herald import roles
from herald.api.app import create_app
from herald.domain.messages import Content, DeliveryJob
from herald.pipeline.envelope import envelope
from herald.runtime import Runtime
from herald.store.tables import outbox_events
from tests.conftest import settings_for
from tests.smtp_sink import SmtpSink

URL = "/api/v1/notifications"
SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}


@dataclass
class Pipeline:
    runtime: Runtime
    sink: SmtpSink
    http: httpx.AsyncClient

    async def send(self, **changes: Any) -> dict[str, Any]:
        response = await self.http.post(URL, json={**SEED, **changes})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_for_delivery(
        self, notification_id: str, condition: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            body = (await self.http.get(f"{URL}/{notification_id}")).json()
            if condition(body["deliveries"][0]):
                return body
            assert asyncio.get_running_loop().time() < deadline, f"never happened: {body}"
            await asyncio.sleep(0.01)

    async def wait_until_done(self, notification_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body: dict[str, Any] = (await self.http.get(f"{URL}/{notification_id}")).json()
            if body["status"] != "PENDING":
                return body
            assert asyncio.get_running_loop().time() < deadline, f"still PENDING: {body}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def pipeline(database_url: str, smtp_sink: SmtpSink) -> AsyncIterator[Pipeline]:
    settings = settings_for(
        database_url,
        smtp_url=smtp_sink.url,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        retry_max_attempts=3,
        delivery_lease_seconds=1.0,
        smtp_timeout_seconds=2.0,
    )
    rt = Runtime(settings)
    await rt.start(migrate=False)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(role(stop))
        for role in (
            roles.relay(rt),
            roles.router(rt),
            roles.status(rt),
            roles.channel_worker(rt, "email"),
        )
    ]
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield Pipeline(rt, smtp_sink, http)
    stop.set()
    await asyncio.gather(*tasks)
    await rt.close()


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

    async with pipeline.runtime.db.read() as conn:
        statuses = (await conn.execute(sa.select(outbox_events.c.status))).scalars().all()
    assert set(statuses) == {"PUBLISHED"}  # requested, job, status: all relayed


async def test_transient_failures_are_retried_until_sent(pipeline: Pipeline) -> None:
    pipeline.sink.fail_data(2)  # 451 twice, then accept
    accepted = await pipeline.send()
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "SENT"
    assert done["deliveries"][0]["attempts"] == 3
    assert "451" in done["deliveries"][0]["last_error"]
    assert len(await pipeline.sink.wait_for(1)) == 1


async def test_rejected_recipient_fails_after_one_attempt(pipeline: Pipeline) -> None:
    pipeline.sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    accepted = await pipeline.send(recipient="nobody@example.com")
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "FAILED"
    [delivery] = done["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("FAILED", 1)
    assert "550" in delivery["last_error"]
    assert pipeline.sink.messages() == []


async def test_retries_give_up_after_the_configured_attempts(pipeline: Pipeline) -> None:
    pipeline.sink.fail_data(1000)
    accepted = await pipeline.send()
    done = await pipeline.wait_until_done(accepted["id"])
    [delivery] = done["deliveries"]
    assert (done["status"], delivery["status"], delivery["attempts"]) == ("FAILED", "FAILED", 3)


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


async def test_poison_message_does_not_block_its_partition(pipeline: Pipeline) -> None:
    from herald.bus.base import OutgoingMessage

    topics = pipeline.runtime.topics
    await pipeline.runtime.bus.publish(
        [OutgoingMessage(topics.deliveries("email"), "a@example.com", b"\x00 not json")]
    )
    accepted = await pipeline.send()  # same key, so the same partition, behind the poison
    done = await pipeline.wait_until_done(accepted["id"])
    assert done["status"] == "SENT"
