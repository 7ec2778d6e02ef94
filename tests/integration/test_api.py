"""The HTTP API against a real database (SQLite and PostgreSQL), without the pipeline running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from herald.api.app import create_app
from herald.runtime import Runtime
from herald.store.tables import (
    bus_messages,
    deliveries,
    idempotency_keys,
    notifications,
    outbox_events,
)
from tests.conftest import settings_for

SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}
URL = "/api/v1/notifications"


async def count(runtime: Runtime, table: sa.Table) -> int:
    async with runtime.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def problem_fields(response: httpx.Response) -> list[str]:
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    return [e["field"] for e in body["errors"]]


async def published(runtime: Runtime) -> list[sa.Row[tuple[str, str, bytes]]]:
    """What a notification's transaction published: on the embedded bus (these tests' bus), it
    appended the event to the log itself (bus_messages), in the same transaction."""
    async with runtime.db.read() as conn:
        rows = await conn.execute(
            sa.select(bus_messages.c.topic, bus_messages.c.key, bus_messages.c.value)
        )
        return list(rows.all())


async def test_seed_request_is_accepted_with_its_event_in_one_transaction(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(URL, json=SEED)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["recipient"] == "a@example.com"
    assert body["channels"] == ["email"]
    assert [d["status"] for d in body["deliveries"]] == ["PENDING"]
    assert response.headers["location"] == f"{URL}/{body['id']}"

    fetched = await client.get(f"{URL}/{body['id']}")
    assert fetched.status_code == 200
    detail = fetched.json()
    assert [d.pop("history") for d in detail["deliveries"]] == [[]]  # no attempt yet
    assert [d.pop("history") for d in body["deliveries"]] == [None]  # only on the detail view
    assert detail == body

    events = await published(runtime)
    # Nothing left to route (an inline recipient, now): its job, not a notification.requested.
    assert [(e.topic, e.key) for e in events] == [("herald.deliveries.email", "a@example.com")]
    assert body["id"].encode() in events[0].value
    assert await count(runtime, outbox_events) == 0  # no relay hop on the embedded bus


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipient": "not-an-address"}, "recipient"),
        ({"recipient": None}, "recipient"),
        ({"subject": None}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"message": ""}, "message"),
        ({"channels": ["carrier-pigeon"]}, "channels[0]"),
        ({"channels": []}, "channels"),
        ({"user_id": "u\n1"}, "user_id"),
        ({"status": "SENT"}, "status"),  # no mass assignment of server-owned fields
    ],
)
async def test_invalid_fields_are_named(
    client: httpx.AsyncClient, runtime: Runtime, change: dict[str, Any], field: str
) -> None:
    body = {**SEED, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = await client.post(URL, json=body)
    assert response.status_code == 422
    assert field in problem_fields(response)
    assert await count(runtime, notifications) == 0


async def test_message_over_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={**SEED, "message": "x" * (256 * 1024 + 1)})
    assert response.status_code == 422
    assert problem_fields(response) == ["message"]


@pytest.mark.parametrize(
    ("content", "field"),
    [(b"{not json", "body"), (b"[1, 2]", "body"), (b"", "body")],
)
async def test_bodies_that_are_not_an_object(
    client: httpx.AsyncClient, content: bytes, field: str
) -> None:
    response = await client.post(URL, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert problem_fields(response) == [field]


async def test_oversized_request_body_gets_413(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={**SEED, "message": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert problem_fields(response) == ["body"]


async def test_unknown_notification_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{URL}/00000000-0000-7000-8000-000000000000")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "bus": "ok"}


# -- idempotency -------------------------------------------------------------------------


async def test_same_key_same_body_returns_the_original(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post(URL, json=SEED, headers={"Idempotency-Key": "order-1"})
    again = await client.post(URL, json=SEED, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count(runtime, notifications) == 1
    assert len(await published(runtime)) == 1


async def test_same_key_different_body_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post(URL, json=SEED, headers={"Idempotency-Key": "order-2"})
    changed = await client.post(
        URL, json={**SEED, "subject": "Other"}, headers={"Idempotency-Key": "order-2"}
    )
    assert changed.status_code == 422
    assert changed.json()["code"] == "idempotency_key_reused"
    assert problem_fields(changed) == ["Idempotency-Key"]
    assert await count(runtime, notifications) == 1


async def test_twenty_concurrent_requests_with_one_key_create_one_notification(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    responses = await asyncio.gather(
        *(client.post(URL, json=SEED, headers={"Idempotency-Key": "burst"}) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await count(runtime, notifications) == 1
    assert await count(runtime, deliveries) == 1
    assert len(await published(runtime)) == 1


async def test_requests_without_a_key_are_each_new(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ids = {(await client.post(URL, json=SEED)).json()["id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9"])
async def test_malformed_keys_are_refused(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(URL, json=SEED, headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 422
    assert problem_fields(response) == ["Idempotency-Key"]


@pytest.fixture
async def short_ttl_client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    rt = Runtime(settings_for(database_url, idempotency_ttl_seconds=0.2))
    await rt.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(rt, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http, rt
    await rt.close()


async def test_keys_expire_after_the_window(
    short_ttl_client: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = short_ttl_client
    first = await client.post(URL, json=SEED, headers={"Idempotency-Key": "k"})
    await asyncio.sleep(0.3)
    later = await client.post(
        URL, json={**SEED, "subject": "New"}, headers={"Idempotency-Key": "k"}
    )
    assert later.status_code == 202
    assert later.json()["id"] != first.json()["id"]
    assert await count(runtime, idempotency_keys) == 1  # the expired row was replaced


# -- listing -----------------------------------------------------------------------------


async def test_list_pages_newest_first_with_filters(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        recipient = "b@example.com" if i % 2 else "a@example.com"
        ids.append((await client.post(URL, json={**SEED, "recipient": recipient})).json()["id"])

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(URL, params=params)).json()
        seen += [n["id"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]

    only_b = (await client.get(URL, params={"recipient": "b@example.com"})).json()["items"]
    assert [n["id"] for n in only_b] == [ids[3], ids[1]]
    pending = (await client.get(URL, params={"status": "PENDING"})).json()["items"]
    assert len(pending) == 5
    assert (await client.get(URL, params={"status": "SENT"})).json()["items"] == []


async def test_list_filters_by_user_channel_and_time(client: httpx.AsyncClient) -> None:
    await client.put("/api/v1/users/ana", json={"email": "ana@example.com"})
    to_ana = (await client.post(URL, json={**SEED, "user_id": "ana"})).json()
    before = datetime.now(UTC)
    await asyncio.sleep(0.01)
    inline = (await client.post(URL, json=SEED)).json()

    def ids(params: dict[str, Any]) -> Any:
        return client.get(URL, params=params)

    by_user = (await ids({"user_id": "ana"})).json()["items"]
    assert [n["id"] for n in by_user] == [to_ana["id"]]
    on_email = (await ids({"channel": "email"})).json()["items"]
    assert [n["id"] for n in on_email] == [inline["id"], to_ana["id"]]
    assert (await ids({"channel": "sms"})).json()["items"] == []
    since = (await ids({"since": before.isoformat()})).json()["items"]
    assert [n["id"] for n in since] == [inline["id"]]
    until = (await ids({"until": before.isoformat()})).json()["items"]
    assert [n["id"] for n in until] == [to_ana["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "bogus"}, "cursor"),
        ({"status": "LOST"}, "status"),
        ({"channel": "pigeon"}, "channel"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-12-05T10:00:00"}, "until"),  # no time zone
    ],
)
async def test_bad_list_parameters_are_named(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get(URL, params=params)
    assert response.status_code == 422
    assert problem_fields(response) == [field]
