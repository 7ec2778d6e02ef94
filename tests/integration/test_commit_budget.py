"""What a notification costs in commits, counted where commits happen (Database.write): the
batched pipeline keeps it at half a commit or less, so batching cannot silently regress."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from herald.store.tables import notifications
from tests.pipeline_harness import URL, PipelineFactory

COUNT = 1000


async def test_a_thousand_notifications_cost_at_most_half_a_commit_each(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(rate_limit_per_second=0) as p:
        db = p.runtime.db
        before = db.commits
        bodies = [
            {
                "user_id": f"user-{i % 100}",
                "recipient": f"u{i % 100}@example.com",
                "subject": f"n{i}",
                "message": "hello",
            }
            for i in range(COUNT)
        ]
        responses = await asyncio.gather(*(p.http.post(URL, json=body) for body in bodies))
        assert {r.status_code for r in responses} == {202}
        await p.sink.wait_for(COUNT, timeout=120)
        deadline = time.monotonic() + 60
        while True:  # until the status stage has settled every one
            async with db.read() as conn:
                sent = await conn.scalar(
                    sa.select(sa.func.count()).where(notifications.c.status == "SENT")
                )
            if sent == COUNT or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        commits = db.commits - before
    print(f"\n{commits} commits for {COUNT} notifications ({commits / COUNT:.3f} each)")
    assert sent == COUNT
    assert len({m.notification_id for m in p.sink.messages()}) == COUNT
    assert commits <= COUNT / 2
