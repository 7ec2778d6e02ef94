"""The Kafka broker goes away while requests keep coming; later a new, empty one starts.

Tansu keeps everything in memory, so the new broker has no topics, no consumer groups and none
of the messages that had not been consumed: Herald must keep accepting (the outbox grows),
recreate its topics, reconnect, and put back on the bus what went with the old broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from herald.store.database import Database
from herald.store.tables import outbox_events
from tests.conftest import Deployment
from tests.faults.counts import count, post_all, settle
from tests.kafka_broker import TansuBroker
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]


def mails(prefix: str, n: int) -> list[dict[str, str]]:
    return [
        {"recipient": f"{prefix}{i}@example.com", "subject": f"{prefix}{i}", "message": "x"}
        for i in range(n)
    ]


async def pending_outbox(url: str) -> int:
    db = Database(url)
    async with db.read() as conn:
        n = await conn.scalar(
            sa.select(sa.func.count()).where(outbox_events.c.status != "PUBLISHED")
        )
    await db.close()
    return int(n or 0)


@pytest.mark.timeout(240)
async def test_broker_down_while_requests_keep_coming(
    distributed: Deployment, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    broker = TansuBroker(tmp_path).start()  # this test's own: it will be stopped
    env = {
        "HERALD_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "HERALD_KAFKA_PUBLISH_TIMEOUT_SECONDS": "3",
        "HERALD_RECOVERY_AFTER_SECONDS": "5",
        "HERALD_MAINTENANCE_INTERVAL_SECONDS": "1",
        "HERALD_RATE_LIMIT_PER_SECOND": "0",
    }
    processes = [
        distributed.process(("api",), **env),
        distributed.process(("relay",), **env),
        distributed.process(("worker",), **env),
    ]
    try:
        processes[0].start()
        for process in processes[1:]:
            process.start(wait=False)
        processes[2].wait_for_log("bus.assigned")
        async with httpx.AsyncClient(base_url=processes[0].url) as http:
            before = await post_all(http, mails("before", 10))
            await settle(http, before, timeout=45)

            broker.stop()
            during = await post_all(http, mails("during", 30))
            assert len(during) == 30, "the API must keep accepting while the broker is down"
            await asyncio.sleep(2)
            waiting = await pending_outbox(distributed.database_url)

            broker = TansuBroker(tmp_path, port=broker.port).start()  # new and empty
            after = await post_all(http, mails("after", 10))
            views = await settle(http, before + during + after, timeout=150)
    finally:
        for process in processes:
            process.stop()
        broker.stop()

    counts = count(smtp_sink, views)
    print(f"\n{counts} outbox_waiting_during_outage={waiting}")
    assert waiting >= 30  # the requests accepted meanwhile waited safely in the outbox
    assert (counts.accepted, counts.lost, counts.retrying) == (50, 0, 0)
    assert counts.delivered == 50
