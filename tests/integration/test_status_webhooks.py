"""Status webhooks out: a tenant subscribes a URL to status events and Herald posts each one
there, signed as the webhook channel signs, through the pipeline: retried, ordered per
notification, dead-lettered when the receiver keeps refusing, replayable. The receivers are
real HTTP servers on loopback that check the signature the documented way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from herald.api.app import create_app
from herald.clock import utcnow
from herald.store import api_keys, webhook_events
from herald.store.webhook_events import E
from tests.fakes.http_server import Request, Response, running
from tests.fakes.twilio import FakeTwilio
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.test_multichannel import SID, TOKEN, twilio_provider, wait_for_status
from tests.integration.test_receipts import DONE, PUBLIC_URL, post, sent_sms
from tests.pipeline_harness import Pipeline, PipelineFactory

SECRET = "whsec_status_events_0123456789"
SUBSCRIPTIONS = "/api/v1/webhook-subscriptions"
# Retries quick enough for a test, many enough to outlast a receiver down for a few seconds.
PATIENT = {
    "webhook_secret": SECRET,
    "retry_policies": {
        "status_webhooks": {"max_attempts": 40, "base_seconds": 0.05, "max_seconds": 0.3}
    },
    "circuit_reset_seconds": 0.3,
    "circuit_max_reset_seconds": 0.6,
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running(WebhookReceiver([SECRET])) as server:
        yield server


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with running(FakeTwilio(SID, TOKEN)) as server:
        yield server


async def subscribe(p: Pipeline, url: str, events: list[str]) -> dict[str, Any]:
    response = await p.http.post(SUBSCRIPTIONS, json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_events(
    receiver: WebhookReceiver, count: int, timeout: float = 30
) -> list[Request]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(receiver.verified) < count:
        assert asyncio.get_running_loop().time() < deadline, [
            r.json()["type"] for r in receiver.verified
        ]
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # nothing more should come
    return list(receiver.verified)


def by_notification(requests: list[Request]) -> dict[str, list[str]]:
    """The event types each notification's events arrived in, in order."""
    seen: dict[str, list[str]] = {}
    for r in requests:
        body = r.json()
        seen.setdefault(body["data"]["notification_id"], []).append(body["type"])
    return seen


async def test_a_receiver_gets_signed_notification_sent_then_delivered(
    start_pipeline: PipelineFactory, twilio: FakeTwilio, receiver: WebhookReceiver
) -> None:
    settings = {
        "providers": twilio_provider("twilio-main", twilio),
        "public_url": PUBLIC_URL,
        **PATIENT,
    }
    async with start_pipeline(channels=("email", "sms"), **settings) as p:
        subscription = await subscribe(
            p, receiver.url + "/hooks", ["notification.sent", "notification.delivered"]
        )
        notification_id, sms = await sent_sms(p, twilio)
        await wait_for_events(receiver, 1)
        delivered = await post(p.http, twilio.callback(sms, "delivered"))
        assert delivered.json()["outcome"] == "applied"
        got = await wait_for_events(receiver, 2)

    assert receiver.unverified == []
    assert receiver.duplicates == []
    assert [r.path for r in got] == ["/hooks", "/hooks"]
    bodies = [r.json() for r in got]
    assert [b["type"] for b in bodies] == ["notification.sent", "notification.delivered"]
    for request, body in zip(got, bodies, strict=True):
        assert request.headers["herald-webhook-id"] == body["id"]
        assert request.headers["herald-webhook-event"] == body["type"]
        assert body["tenant"] == "default"
        assert body["data"]["notification_id"] == notification_id
        assert body["created_at"].endswith("Z")
    assert [b["data"]["status"] for b in bodies] == ["SENT", "DELIVERED"]
    assert subscription["events"] == ["notification.sent", "notification.delivered"]


async def test_a_receiver_down_for_a_while_gets_every_event_after_in_order(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    async with start_pipeline(**PATIENT) as p:
        await subscribe(p, receiver.url, ["*"])
        receiver.fail_next(10_000, Response(503))  # down
        sent = [await p.send(recipient=f"u{i}@example.com") for i in range(4)]
        for body in sent:
            await wait_for_status(p, body["id"], DONE)
        await asyncio.sleep(1.5)  # retries come and fail meanwhile
        refused = len(receiver.requests)
        with receiver.lock:
            receiver._failures.clear()  # up again
        got = await wait_for_events(receiver, 8)
        async with p.runtime.db.read() as conn:
            rows = [
                e for body in sent for e in await webhook_events.of_notification(conn, body["id"])
            ]

    assert refused >= 4  # every chain's first event was tried while it was down
    assert receiver.duplicates == []
    assert receiver.unverified == []
    # Each notification's events in the order they happened, its delivery's before its own.
    assert by_notification(got) == {
        body["id"]: ["delivery.sent", "notification.sent"] for body in sent
    }
    assert {e.status for e in rows} == {webhook_events.SENT}
    assert max(e.attempts for e in rows) > 1


async def test_an_event_its_receiver_always_refuses_is_dead_lettered_and_replayable(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    settings = {
        **PATIENT,
        "retry_policies": {
            "status_webhooks": {"max_attempts": 3, "base_seconds": 0.05, "max_seconds": 0.1}
        },
    }
    async with start_pipeline(**settings) as p:
        await subscribe(p, receiver.url, ["notification.sent"])
        receiver.fail_next(3, Response(500))  # every attempt the event gets
        body = await p.send()
        await wait_for_status(p, body["id"], DONE)
        letters = await _dead_letters(p, 1)
        [letter] = letters
        detail = (await p.http.get(f"/api/v1/dead-letters/{letter['id']}")).json()
        replayed = await p.http.post(f"/api/v1/dead-letters/{letter['id']}/replay")
        got = await wait_for_events(receiver, 1)
        again = await p.http.post(f"/api/v1/dead-letters/{letter['id']}/replay")
        await asyncio.sleep(0.3)

    assert letter["kind"] == "status_webhook"
    assert letter["reason"] == "exhausted"
    assert letter["notification_id"] == body["id"]
    assert detail["attempts"] == 3
    assert "HTTP 500" in detail["error"]
    assert replayed.status_code == 202, replayed.text
    assert [r.json()["type"] for r in got] == ["notification.sent"]
    assert len(receiver.requests) == 4  # three refused, the replay taken
    assert again.json()["replayed"] is False  # a replay once only


async def _dead_letters(p: Pipeline, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        page = (await p.http.get("/api/v1/dead-letters?kind=status_webhook")).json()
        if len(page["items"]) >= count:
            items: list[dict[str, Any]] = page["items"]
            return items
        assert asyncio.get_running_loop().time() < deadline, page
        await asyncio.sleep(0.05)


async def test_a_deleted_subscription_gets_nothing_more(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    async with start_pipeline(**PATIENT) as p:
        subscription = await subscribe(p, receiver.url, ["notification.sent"])
        first = await p.send()
        await wait_for_events(receiver, 1)
        deleted = await p.http.delete(f"{SUBSCRIPTIONS}/{subscription['id']}")
        gone = await p.http.get(f"{SUBSCRIPTIONS}/{subscription['id']}")
        second = await p.send()
        await wait_for_status(p, second["id"], DONE)
        await asyncio.sleep(0.5)

    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert [r.json()["data"]["notification_id"] for r in receiver.requests] == [first["id"]]


async def test_a_tenants_failing_receiver_is_rested_and_holds_back_no_other_tenant(
    start_pipeline: PipelineFactory,
) -> None:
    """acme's receiver refuses everything: after a few failures its host's circuit (acme's
    own) opens and its events are put off without attempts, while globex's events all go."""
    refusing, working = WebhookReceiver(), WebhookReceiver()
    with running(refusing), running(working):
        refusing.fail_next(1_000_000, Response(503))
        settings = {**PATIENT, "circuit_reset_seconds": 5.0, "circuit_max_reset_seconds": 5.0}
        async with start_pipeline(**settings) as p:
            keys = {}
            async with p.runtime.db.write() as conn:
                for tenant in ("acme", "globex"):
                    _, keys[tenant] = await api_keys.create(
                        conn, tenant, tenant, ["admin"], now=utcnow()
                    )
            transport = httpx.ASGITransport(app=create_app(p.runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:

                def as_(tenant: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {keys[tenant]}"}

                for tenant, receiver in (("acme", refusing), ("globex", working)):
                    # Each tenant's events are signed with its own secret.
                    rotated = await http.post(
                        "/api/v1/webhook-secret/rotate",
                        json={"grace_seconds": 0},
                        headers=as_(tenant),
                    )
                    receiver.secrets = [rotated.json()["webhook_secret"]]
                    made = await http.post(
                        SUBSCRIPTIONS,
                        json={"url": receiver.url, "events": ["notification.sent"]},
                        headers=as_(tenant),
                    )
                    assert made.status_code == 201, made.text
                for tenant in ("acme", "globex") * 6:
                    sent = await http.post(
                        "/api/v1/notifications",
                        json={
                            "recipient": f"{tenant}@example.com",
                            "subject": "s",
                            "message": "hi",
                        },
                        headers=as_(tenant),
                    )
                    assert sent.status_code == 202, sent.text
                got = await wait_for_events(working, 6)
                await asyncio.sleep(0.5)
                async with p.runtime.db.read() as conn:
                    rows = await conn.execute(
                        sa.select(E.tenant_id, E.status, E.attempts).where(E.tenant_id == "acme")
                    )
                    acme = rows.all()

    assert {r.json()["tenant"] for r in got} == {"globex"}
    assert len(acme) == 6
    assert {row.status for row in acme} <= {"RETRY_PENDING", "PROCESSING"}
    # The circuit opened after five failures (the threshold): the rest waited, unattempted.
    assert len(refusing.requests) < 6 * 3
    assert sum(row.attempts for row in acme) == len(refusing.requests)
