"""Users over the API: webhook secret rotation, the unsubscribe link email carries, and
rules loaded from a YAML file at start."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa

from herald.runtime import Runtime
from herald.store.tables import deliveries
from herald.tenancy import DEFAULT_TENANT
from tests.conftest import settings_for


async def test_rotating_a_webhook_secret_keeps_the_old_one_signing_for_the_grace(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await client.put("/api/v1/users/w1", json={"webhook_url": "http://127.0.0.1:9/h"})
    assert created.status_code == 201
    first = created.json()["webhook_secret"]
    again = (
        await client.put("/api/v1/users/w1", json={"webhook_url": "http://127.0.0.1:9/h"})
    ).json()
    assert again["webhook_secret"] is None  # shown once only
    assert again["webhook_secrets_active"] == 1

    rotated = await client.post(
        "/api/v1/users/w1/webhook-secret/rotate", json={"grace_seconds": 3600}
    )
    second = rotated.json()["webhook_secret"]
    assert second != first
    user = (await client.get("/api/v1/users/w1")).json()
    assert user["webhook_secrets_active"] == 2
    assert user["webhook_secret"] is None

    ended = await client.post("/api/v1/users/w1/webhook-secret/rotate", json={"grace_seconds": 0})
    assert (await client.get("/api/v1/users/w1")).json()["webhook_secrets_active"] == 1
    assert ended.json()["webhook_secret"] not in (first, second)
    missing = await client.post("/api/v1/users/nobody/webhook-secret/rotate")
    assert missing.status_code == 404


async def test_email_of_an_opt_out_able_category_carries_a_working_unsubscribe_link(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.put("/api/v1/users/n1", json={"email": "n1@example.com"})
    sent = await client.post(
        "/api/v1/notifications",
        json={
            "user_id": "n1",
            "channels": ["email"],
            "subject": "News",
            "message": "M",
            "category": "news",
        },
    )
    assert sent.status_code == 202, sent.text
    async with runtime.db.read() as conn:
        content = await conn.scalar(sa.select(deliveries.c.content))
    assert content["unsubscribe"] is True  # signed by the worker when it sends
    headers = await runtime.unsubscribe_links.headers(DEFAULT_TENANT, "n1", "news")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"].strip("<>")
    query = urlsplit(link).query
    assert list(parse_qs(query)) == ["token"]

    one_click = {"List-Unsubscribe": "One-Click"}
    forged = await client.post(
        f"/api/v1/unsubscribe?{query.replace('token=', 'token=x')}", data=one_click
    )
    assert forged.status_code == 404
    done = await client.post(f"/api/v1/unsubscribe?{query}", data=one_click)
    assert done.json() == {"status": "unsubscribed", "category": "news"}
    prefs = (await client.get("/api/v1/users/n1/preferences")).json()
    assert prefs["categories"]["news"]["enabled"] is False


async def test_bad_user_input_is_named(client: httpx.AsyncClient) -> None:
    cases = {
        "timezone": {"timezone": "Mars/Olympus"},
        "phone": {"phone": "12345"},
        "webhook_url": {"webhook_url": "ftp://example.com"},
    }
    for field, body in cases.items():
        response = await client.put("/api/v1/users/bad", json=body)
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [field]
    prefs = await client.put(
        "/api/v1/users/bad/preferences", json={"quiet_hours": {"start": "22:00", "end": "22:00"}}
    )
    assert prefs.status_code == 422
    assert (await client.put("/api/v1/users/ghost/preferences", json={})).status_code == 404


async def test_rules_load_from_a_yaml_file_at_start(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: shipped\n"
        "    event_type: order.shipped\n"
        "    condition: data.amount > 10\n"
        "    channels: [email]\n"
        "    template: order-shipped\n"
    )
    rt = Runtime(settings_for(database_url, rules_file=str(path)))
    await rt.start(migrate=False, load_rules=True)
    try:
        from herald.api.app import create_app

        transport = httpx.ASGITransport(app=create_app(rt, open_access=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            rules = (await http.get("/api/v1/rules")).json()
    finally:
        await rt.close()
    assert [(r["name"], r["condition"], r["channels"]) for r in rules] == [
        ("shipped", "data.amount > 10", ["email"])
    ]
