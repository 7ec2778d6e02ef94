"""kill -9 `herald serve` with deliveries in flight; after a restart nothing accepted is lost."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa

from herald.store.database import Database
from herald.store.tables import staged_batches
from tests.conftest import Deployment
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

URL = "/api/v1/notifications"
COUNT = 60


async def post_notifications(url: str) -> set[str]:
    """POST COUNT notifications over 12 recipients at once; the ids accepted."""
    async with httpx.AsyncClient(base_url=url) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    URL,
                    json={
                        "recipient": f"user{i % 12}@example.com",
                        "subject": f"n{i}",
                        "message": "hello",
                    },
                )
                for i in range(COUNT)
            )
        )
    return {r.json()["id"] for r in responses if r.status_code == 202}


async def test_sigkill_mid_delivery_loses_nothing(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    smtp_sink.delay = 0.05  # a slow relay, so the kill lands while deliveries are in flight
    herald = deployment.process(
        HERALD_SMTP_POOL_SIZE="2",
        # A killed worker's claim blocks its delivery until the lease lapses.
        HERALD_DELIVERY_LEASE_SECONDS="2",
        HERALD_SMTP_TIMEOUT_SECONDS="1",
    ).start()
    try:
        accepted = await post_notifications(herald.url)
        assert len(accepted) == COUNT
        await smtp_sink.wait_for(3)  # some are out, most are not
        herald.kill()
        delivered_before = len(smtp_sink.messages())
        assert delivered_before < COUNT, "the kill came too late to prove anything"

        herald.start()
        await smtp_sink.wait_for_notifications(accepted, timeout=60)
        async with httpx.AsyncClient(base_url=herald.url) as http:
            for _ in range(500):
                page = (await http.get(URL, params={"limit": 100})).json()["items"]
                if all(n["status"] == "SENT" for n in page):
                    break
                await asyncio.sleep(0.05)
        statuses = {n["id"]: n["status"] for n in page}
    finally:
        herald.stop()

    arrived = {m.notification_id for m in smtp_sink.messages()}
    duplicates = smtp_sink.duplicates()
    print(
        f"\naccepted={len(accepted)} delivered_before_kill={delivered_before} "
        f"delivered={len(arrived)} lost={len(accepted - arrived)} "
        f"duplicate_emails={sum(duplicates.values()) - len(duplicates)}"
    )
    assert accepted - arrived == set(), "accepted notifications were lost"
    assert statuses == dict.fromkeys(accepted, "SENT")
    # At-least-once: a mail the relay accepted just before the kill may be sent again, but
    # never with a different Message-ID, so the receiver can tell it is the same mail.
    assert len({m.message_id for m in smtp_sink.messages()}) == COUNT


async def test_sigterm_mid_delivery_finishes_what_it_holds_and_repeats_nothing(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    smtp_sink.delay = 0.05
    herald = deployment.process(HERALD_SMTP_POOL_SIZE="2", HERALD_SHUTDOWN_TIMEOUT_SECONDS="10")
    herald.start()
    try:
        accepted = await post_notifications(herald.url)
        await smtp_sink.wait_for(3)
        assert herald.terminate(timeout=30) == 0  # a clean exit, within the deadline
        stopped_with = len(smtp_sink.messages())
        herald.start()
        await smtp_sink.wait_for(COUNT, timeout=60)
        await asyncio.sleep(1)  # anything sent twice would arrive by now
    finally:
        herald.stop()
    arrived = [m.notification_id for m in smtp_sink.messages()]
    duplicates = len(arrived) - len(set(arrived))
    print(
        f"\naccepted={len(accepted)} delivered_before_stop={stopped_with} "
        f"delivered={len(set(arrived))} duplicates={duplicates}"
    )
    assert len(accepted) == COUNT
    assert set(arrived) == accepted
    assert len(arrived) == COUNT  # graceful: what was in flight was finished and recorded


async def test_sigkill_with_staged_batches_waiting_loses_nothing(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    """Batches accepted as one row each (staged), and single notifications behind them, still
    to be written out when `herald serve` is killed: after a restart every one is sent once."""
    smtp_sink.delay = 0.05
    herald = deployment.process(
        HERALD_SMTP_POOL_SIZE="2",
        HERALD_DELIVERY_LEASE_SECONDS="2",
        HERALD_SMTP_TIMEOUT_SECONDS="1",
        HERALD_STAGE_BATCHES_FROM="20",
        # The expander waits while five messages wait for the consumers: batches stay staged.
        HERALD_EXPAND_AHEAD="5",
    ).start()
    batches, per_batch, singles = 3, 40, 10
    total = batches * per_batch + singles
    db = Database(deployment.database_url)
    try:
        async with httpx.AsyncClient(base_url=herald.url, timeout=30) as http:
            accepted: set[str] = set()
            for b in range(batches):
                items = [
                    {
                        "recipient": f"user{i % 12}@example.com",
                        "subject": f"b{b}-{i}",
                        "message": "x",
                    }
                    for i in range(per_batch)
                ]
                answer = await http.post(f"{URL}/batch", json={"items": items})
                assert answer.status_code == 202, answer.text
                accepted |= {item["notification"]["id"] for item in answer.json()["items"]}
            for i in range(singles):
                answer = await http.post(
                    URL, json={"recipient": f"user{i}@example.com", "subject": "s", "message": "x"}
                )
                accepted.add(answer.json()["id"])
        assert len(accepted) == total
        async with db.read() as conn:
            staged = await conn.execute(sa.select(sa.func.count()).select_from(staged_batches))
            waiting = int(staged.scalar() or 0)
        await smtp_sink.wait_for(3)
        herald.kill()
        delivered_before = len(smtp_sink.messages())
        assert waiting > 0, "nothing was staged when the process was killed"

        herald.start()
        await smtp_sink.wait_for_notifications(accepted, timeout=90)
        await asyncio.sleep(1)  # anything sent twice would arrive by now
    finally:
        herald.stop()
        await db.close()
    arrived = {m.notification_id for m in smtp_sink.messages()}
    print(
        f"\naccepted={len(accepted)} staged_rows_at_kill={waiting} "
        f"delivered_before_kill={delivered_before} delivered={len(arrived)} "
        f"lost={len(accepted - arrived)}"
    )
    assert accepted - arrived == set(), "accepted notifications were lost"
    assert len({m.message_id for m in smtp_sink.messages()}) == total  # each once
