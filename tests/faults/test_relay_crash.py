"""The relay is killed with SIGKILL while it publishes; a new one takes over its shards."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Deployment
from tests.faults.counts import count, post_all, settle
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.redis]

USERS, PER_USER = 30, 10


async def test_a_relay_killed_mid_publish_loses_nothing(
    distributed: Deployment, smtp_sink: SmtpSink
) -> None:
    env = {
        # A dead relay's shards are taken over after their lease.
        "HERALD_RELAY_SHARD_LEASE_SECONDS": "4",
        "HERALD_KAFKA_PUBLISH_TIMEOUT_SECONDS": "3",
        "HERALD_RATE_LIMIT_PER_SECOND": "0",
    }
    api = distributed.process(("api",), **env)
    relays = [distributed.process(("relay",), name=f"relay{i}", **env) for i in (1, 2)]
    worker = distributed.process(("worker",), **env)
    try:
        api.start()
        relays[0].start(wait=False)
        worker.start(wait=False)
        worker.wait_for_log("bus.assigned")

        async def kill_mid_way() -> int:
            await smtp_sink.wait_for(USERS * PER_USER // 5, timeout=120)
            relays[0].kill()
            relays[1].start(wait=False)  # the replacement
            return len(smtp_sink.messages())

        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            killer = asyncio.create_task(kill_mid_way())

            async def one_user(u: int) -> list[str]:
                bodies = [
                    {
                        "user_id": f"u{u}",
                        "recipient": f"u{u}@example.com",
                        "subject": f"{u}:{i}",
                        "message": "x",
                    }
                    for i in range(PER_USER)
                ]
                return await post_all(http, bodies)

            ids = [
                i
                for batch in await asyncio.gather(*(one_user(u) for u in range(USERS)))
                for i in batch
            ]
            delivered_at_kill = await killer
            views = await settle(http, ids, timeout=120)
    finally:
        for process in (api, *relays, worker):
            process.stop()

    counts = count(smtp_sink, views)
    print(f"\n{counts} delivered_before_kill={delivered_at_kill}")
    assert delivered_at_kill < USERS * PER_USER, "the kill came too late to prove anything"
    assert (counts.accepted, counts.delivered, counts.lost, counts.retrying) == (300, 300, 0, 0)
