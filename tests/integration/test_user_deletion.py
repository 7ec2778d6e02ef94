"""Deleting a user takes what is theirs with it: a new user given the same id starts with an
empty inbox and default preferences, and nothing still to be sent to the deleted user is
sent, whether scheduled, waiting for a retry, or under way when it was deleted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from herald.clock import utcnow
from herald.ids import uuid7
from herald.runtime import Runtime
from herald.store import deliveries, inbox
from herald.store.deliveries import Claim, ClaimOutcome
from herald.store.inbox import InboxItem
from herald.tenancy import DEFAULT_TENANT
from tests.pipeline_harness import PipelineFactory

NOTIFICATIONS = "/api/v1/notifications"


async def make_user(client: httpx.AsyncClient, user: str, **profile: Any) -> dict[str, Any]:
    response = await client.put(
        f"/api/v1/users/{user}", json={"email": f"{user}@example.com", **profile}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def add_inbox_item(runtime: Runtime, user: str, title: str) -> None:
    now = utcnow()
    item = InboxItem(
        id=uuid7(),
        tenant_id=DEFAULT_TENANT,
        user_id=user,
        notification_id=uuid7(),
        category=None,
        title=title,
        body="private to " + user,
        data={},
        status="unread",
        created_at=now,
        read_at=None,
    )
    async with runtime.db.write() as conn:
        assert await inbox.add(conn, item)


async def send(client: httpx.AsyncClient, user: str, **changes: Any) -> dict[str, Any]:
    body = {"user_id": user, "channels": ["email"], "subject": "S", "message": "M", **changes}
    response = await client.post(NOTIFICATIONS, json=body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def claim(runtime: Runtime, delivery_id: str, job_attempt: int, owner: str) -> Claim:
    """What a worker does first with a job: without a claim, it sends nothing."""
    now = utcnow()
    async with runtime.db.write() as conn:
        return await deliveries.claim(
            conn,
            delivery_id,
            job_attempt=job_attempt,
            now=now + timedelta(hours=2),  # whatever was scheduled is due by then
            lease_until=now + timedelta(hours=3),
            owner=owner,
        )


async def test_a_new_user_with_a_deleted_users_id_starts_afresh(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await make_user(client, "u1", webhook_url="http://127.0.0.1:9/hook")
    await make_user(client, "u2")
    opted_out = {"channels": {"sms": False}, "categories": {"news": {"enabled": False}}}
    assert (await client.put("/api/v1/users/u1/preferences", json=opted_out)).status_code == 200
    for title in ("Your bank statement", "Password reset"):
        await add_inbox_item(runtime, "u1", title)
    await add_inbox_item(runtime, "u2", "Someone else's")
    assert len((await client.get("/api/v1/users/u1/inbox")).json()["items"]) == 2

    assert (await client.delete("/api/v1/users/u1")).status_code == 204
    assert (await client.delete("/api/v1/users/u1")).status_code == 404
    assert (await client.get("/api/v1/users/u1/inbox")).status_code == 404

    again = await make_user(client, "u1", webhook_url="http://127.0.0.1:9/hook")
    assert again["webhook_secret"] not in (None, first["webhook_secret"])
    assert again["webhook_secrets_active"] == 1
    fresh = (await client.get("/api/v1/users/u1/inbox")).json()
    assert fresh == {"unread": 0, "items": [], "next_cursor": None}
    prefs = (await client.get("/api/v1/users/u1/preferences")).json()
    assert prefs["channels"] == {}
    assert prefs["categories"] == {}
    # Only the deleted user's inbox went.
    others = (await client.get("/api/v1/users/u2/inbox")).json()["items"]
    assert [i["title"] for i in others] == ["Someone else's"]


async def test_deleting_a_user_cancels_what_was_still_to_be_sent_to_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await make_user(client, "u1")
    await make_user(client, "u2")
    later = (utcnow() + timedelta(hours=1)).isoformat()
    scheduled = await send(client, "u1", send_at=later)
    retrying = await send(client, "u1")
    under_way = await send(client, "u1")
    kept = await send(client, "u2", send_at=later)
    assert scheduled["status"] == "SCHEDULED"
    ids = {n["id"]: n["deliveries"][0]["id"] for n in (scheduled, retrying, under_way, kept)}

    # A worker failed once on one (a retry is due in a minute) and is sending another.
    assert (await claim(runtime, ids[retrying["id"]], 0, "w1")).outcome == ClaimOutcome.CLAIMED
    async with runtime.db.write() as conn:
        assert await deliveries.finish(
            conn,
            ids[retrying["id"]],
            attempt=1,
            status=deliveries.DeliveryStatus.RETRY_PENDING,
            now=utcnow(),
            next_attempt_at=utcnow() + timedelta(minutes=1),
        )
    assert (await claim(runtime, ids[under_way["id"]], 0, "w2")).outcome == ClaimOutcome.CLAIMED

    assert (await client.delete("/api/v1/users/u1")).status_code == 204

    for cancelled in (scheduled, retrying):
        body = (await client.get(f"{NOTIFICATIONS}/{cancelled['id']}")).json()
        assert body["status"] == "CANCELLED"
        assert [(d["status"], d["skip_reason"]) for d in body["deliveries"]] == [
            ("SKIPPED", "user_deleted")
        ]
        # The jobs still on their way to a worker: the claim fails, nothing is sent.
        job_attempt = 1 if cancelled is retrying else 0
        outcome = await claim(runtime, ids[cancelled["id"]], job_attempt, "w3")
        assert outcome.outcome == ClaimOutcome.FINISHED
    timeline = (await client.get(f"{NOTIFICATIONS}/{scheduled['id']}/timeline")).json()
    assert ("skipped", "user_deleted") in [(s["step"], s["detail"]) for s in timeline["steps"]]

    # The attempt under way ends as it ends; when it fails, it is not retried.
    async with runtime.db.write() as conn:
        assert await deliveries.finish(
            conn,
            ids[under_way["id"]],
            attempt=1,
            status=deliveries.DeliveryStatus.RETRY_PENDING,
            now=utcnow(),
            next_attempt_at=utcnow(),
        )
    retry = await claim(runtime, ids[under_way["id"]], 1, "w2")
    assert retry.outcome == ClaimOutcome.FINISHED
    body = (await client.get(f"{NOTIFICATIONS}/{under_way['id']}")).json()
    assert [(d["status"], d["skip_reason"]) for d in body["deliveries"]] == [
        ("SKIPPED", "user_deleted")
    ]

    # Another user's schedule is untouched.
    other = (await client.get(f"{NOTIFICATIONS}/{kept['id']}")).json()
    assert other["status"] == "SCHEDULED"
    assert [d["status"] for d in other["deliveries"]] == ["PENDING"]


async def test_a_scheduled_notification_for_a_deleted_user_is_never_emailed(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline() as p:
        await make_user(p.http, "gone")
        await make_user(p.http, "stays")
        send_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        doomed = await send(p.http, "gone", subject="For gone", send_at=send_at)
        control = await send(p.http, "stays", subject="For stays", send_at=send_at)
        assert (await p.http.delete("/api/v1/users/gone")).status_code == 204

        deadline = asyncio.get_running_loop().time() + 30
        while (await p.get(control["id"]))["status"] != "SENT":
            assert asyncio.get_running_loop().time() < deadline, "the control was never sent"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # room for a wrong email to arrive
        mails = list(p.sink.received)
        cancelled = await p.get(doomed["id"])

    assert [m.rcpt_tos for m in mails] == [["stays@example.com"]]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["deliveries"][0]["skip_reason"] == "user_deleted"
