"""kill -9 `herald serve` while status events wait for a receiver that is down: after a restart
every event arrives, in order per notification, none lost and none twice."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import Deployment
from tests.fakes.http_server import Response, running
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

SECRET = "whsec_crash_test_0123456789"
COUNT = 20


async def test_sigkill_with_status_events_waiting_loses_none(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    retries = {"status_webhooks": {"max_attempts": 200, "base_seconds": 0.1, "max_seconds": 0.5}}
    herald = deployment.process(
        HERALD_WEBHOOK_SECRET=SECRET,
        HERALD_RETRY_POLICIES=json.dumps(retries),
        HERALD_CIRCUIT_RESET_SECONDS="0.5",
        HERALD_CIRCUIT_MAX_RESET_SECONDS="1",
        HERALD_DELIVERY_LEASE_SECONDS="2",  # a post the kill cut off is taken over soon
        # Retries wait in the outbox: a dead relay's shards are taken over after their lease.
        HERALD_RELAY_SHARD_LEASE_SECONDS="4",
        HERALD_KAFKA_PUBLISH_TIMEOUT_SECONDS="3",
    )
    receiver = WebhookReceiver([SECRET])
    with running(receiver):
        receiver.fail_next(1_000_000, Response(503))  # down
        herald.start()
        try:
            async with httpx.AsyncClient(base_url=herald.url, timeout=10) as http:
                subscribed = await http.post(
                    "/api/v1/webhook-subscriptions", json={"url": receiver.url, "events": ["*"]}
                )
                assert subscribed.status_code == 201, subscribed.text
                accepted = [
                    (
                        await http.post(
                            "/api/v1/notifications",
                            json={
                                "recipient": f"u{i % 5}@example.com",
                                "subject": "s",
                                "message": f"n{i}",
                            },
                        )
                    ).json()["id"]
                    for i in range(COUNT)
                ]
            await smtp_sink.wait_for(COUNT)
            deadline = asyncio.get_running_loop().time() + 30
            # Tried and refused, again and again, until the host's circuit rests it.
            while len(receiver.requests) < 10:
                assert asyncio.get_running_loop().time() < deadline, len(receiver.requests)
                await asyncio.sleep(0.05)
            herald.kill()
            refused = len(receiver.requests)
            with receiver.lock:
                receiver._failures.clear()  # up again
            herald.start()
            deadline = asyncio.get_running_loop().time() + 60
            while len(receiver.verified) < 2 * COUNT:
                assert asyncio.get_running_loop().time() < deadline, len(receiver.verified)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # nothing more should come
        finally:
            herald.stop()

    arrived: dict[str, list[str]] = {}
    for request in receiver.verified:
        body = request.json()
        arrived.setdefault(body["data"]["notification_id"], []).append(body["type"])
    lost = 2 * COUNT - len(receiver.verified)
    print(
        f"\nevents={2 * COUNT} refused_before_kill={refused} arrived={len(receiver.verified)} "
        f"lost={lost} duplicates={len(receiver.duplicates)}"
    )
    assert arrived == {n: ["delivery.sent", "notification.sent"] for n in accepted}
    assert receiver.duplicates == []
    assert receiver.unverified == []
