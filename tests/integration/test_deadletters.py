"""Dead letters through the API: inspect, replay (once), bulk replay, purge."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import sqlalchemy as sa

from herald.bus.base import OutgoingMessage
from herald.store.tables import outbox_events
from tests.pipeline_harness import Pipeline

DLQ = "/api/v1/dead-letters"


async def reject_and_wait(pipeline: Pipeline, *recipients: str) -> list[str]:
    ids = []
    for recipient in recipients:
        pipeline.sink.rcpt_replies[recipient] = "550 5.1.1 No such user"
        ids.append((await pipeline.send(recipient=recipient))["id"])
    for notification_id in ids:
        assert (await pipeline.wait_until_done(notification_id))["status"] == "FAILED"
    return ids


async def wait_sent(pipeline: Pipeline, notification_id: str) -> dict[str, object]:
    return await pipeline.wait_for_delivery(notification_id, lambda d: d["status"] == "SENT")


async def test_inspect_then_replay_once_the_cause_is_fixed(pipeline: Pipeline) -> None:
    [notification_id] = await reject_and_wait(pipeline, "gone@example.com")
    listing = await pipeline.http.get(DLQ, params={"channel": "email", "reason": "permanent"})
    [item] = listing.json()["items"]
    assert (item["kind"], item["status"], item["error_class"]) == (
        "delivery",
        "DEAD",
        "PermanentDeliveryError",
    )
    assert item["notification_id"] == notification_id
    assert (await pipeline.http.get(DLQ, params={"reason": "exhausted"})).json()["items"] == []

    detail = (await pipeline.http.get(f"{DLQ}/{item['id']}")).json()
    assert detail["payload_encoding"] == "utf-8"
    assert "gone@example.com" in detail["payload"]

    del pipeline.sink.rcpt_replies["gone@example.com"]  # the cause is fixed
    first, second = await asyncio.gather(
        pipeline.http.post(f"{DLQ}/{item['id']}/replay"),
        pipeline.http.post(f"{DLQ}/{item['id']}/replay"),
    )
    outcomes = sorted([first, second], key=lambda r: r.status_code)
    assert [r.status_code for r in outcomes] == [200, 202]
    assert outcomes[0].json()["detail"] == "already replayed"

    done = await wait_sent(pipeline, notification_id)
    await asyncio.sleep(0.3)  # anything more would arrive now
    assert [m.notification_id for m in pipeline.sink.messages()] == [notification_id]
    history = [(a["attempt"], a["outcome"]) for a in done["deliveries"][0]["history"]]
    assert history == [(1, "DEAD_LETTERED"), (0, "PENDING"), (1, "SENT")]
    replayed = (await pipeline.http.get(f"{DLQ}/{item['id']}")).json()
    assert (replayed["status"], replayed["replay_count"]) == ("REPLAYED", 1)
    third = await pipeline.http.post(f"{DLQ}/{item['id']}/replay")
    assert (third.status_code, third.json()["replayed"]) == (200, False)


async def test_bulk_replay_previews_and_spaces_out_what_it_sends(pipeline: Pipeline) -> None:
    recipients = [f"bounce{i}@example.com" for i in range(3)]
    ids = await reject_and_wait(pipeline, *recipients)
    preview = await pipeline.http.post(
        f"{DLQ}/replay", json={"reason": "permanent", "dry_run": True}
    )
    assert preview.json()["matched"] == 3
    assert preview.json()["replayed"] == 0
    assert len(await pipeline.dead_letters(status="DEAD")) == 3  # nothing changed

    pipeline.sink.rcpt_replies.clear()
    replay = await pipeline.http.post(f"{DLQ}/replay", json={"reason": "permanent"})
    assert (replay.json()["matched"], replay.json()["replayed"]) == (3, 3)
    for notification_id in ids:
        await wait_sent(pipeline, notification_id)

    async with pipeline.runtime.db.read() as conn:
        jobs = (
            (
                await conn.execute(
                    sa.select(outbox_events.c.available_at)
                    .where(
                        outbox_events.c.topic == pipeline.runtime.topics.deliveries("email"),
                        outbox_events.c.headers.is_not(None),
                    )
                    .order_by(outbox_events.c.available_at.desc())
                    .limit(3)
                )
            )
            .scalars()
            .all()
        )
    gaps = [(a - b).total_seconds() for a, b in pairwise(jobs)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # 10 per second by default


async def test_purge_one_and_by_selection(pipeline: Pipeline) -> None:
    await reject_and_wait(pipeline, "x@example.com", "y@example.com")
    letters = await pipeline.dead_letters()
    assert (await pipeline.http.delete(f"{DLQ}/{letters[0].id}")).status_code == 204
    assert (await pipeline.http.get(f"{DLQ}/{letters[0].id}")).status_code == 404
    counted = await pipeline.http.post(f"{DLQ}/purge", json={"dry_run": True})
    assert counted.json() == {"dry_run": True, "purged": 1}
    purged = await pipeline.http.post(f"{DLQ}/purge", json={"channel": "email"})
    assert purged.json() == {"dry_run": False, "purged": 1}
    assert await pipeline.dead_letters() == []


async def test_a_replayed_poison_message_is_published_again(pipeline: Pipeline) -> None:
    topic = pipeline.runtime.topics.deliveries("email")
    await pipeline.runtime.bus.publish([OutgoingMessage(topic, "k", b"garbage")])
    for _ in range(500):
        letters = await pipeline.dead_letters(kind="message")
        if letters:
            break
        await asyncio.sleep(0.02)
    [letter] = letters
    assert (await pipeline.http.post(f"{DLQ}/{letter.id}/replay")).status_code == 202
    for _ in range(500):  # still garbage, so it comes back as a second dead letter
        again = await pipeline.dead_letters(kind="message")
        if len(again) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(letter.status for letter in again) == ["DEAD", "REPLAYED"]
    assert {letter.payload for letter in again} == {b"garbage"}
