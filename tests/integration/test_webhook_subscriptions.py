"""/api/v1/webhook-subscriptions: subscribe, list, look up and unsubscribe; bad input named."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from herald.store.webhook_subscriptions import MAX_PER_TENANT

URL = "/api/v1/webhook-subscriptions"
HOOK = "http://127.0.0.1:9/hooks"  # loopback: allowed in tests (HERALD_OUTBOUND_ALLOW)


async def test_subscribe_list_look_up_and_unsubscribe(client: httpx.AsyncClient) -> None:
    made = await client.post(
        URL,
        json={
            "url": f"  {HOOK}  ",
            "events": ["delivery.bounced", "notification.sent", "delivery.bounced"],
            "description": "billing",
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["url"] == HOOK
    assert body["events"] == ["delivery.bounced", "notification.sent"]  # once each, in order
    assert body["description"] == "billing"
    everything = await client.post(URL, json={"url": HOOK, "events": ["*"]})
    assert everything.status_code == 201

    listed = (await client.get(URL)).json()["items"]
    one = await client.get(f"{URL}/{body['id']}")
    deleted = await client.delete(f"{URL}/{body['id']}")
    again = await client.delete(f"{URL}/{body['id']}")
    after = (await client.get(URL)).json()["items"]

    assert [s["id"] for s in listed] == [body["id"], everything.json()["id"]]
    assert one.json() == body
    assert deleted.status_code == 204
    assert again.status_code == 404
    assert [s["id"] for s in after] == [everything.json()["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": HOOK, "events": ["notification.sent", "notification.opened"]}, "events[1]"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK}, "events"),
        ({"url": "ftp://127.0.0.1/x", "events": ["*"]}, "url"),
        ({"url": "/relative", "events": ["*"]}, "url"),
        ({"url": "http://xn--/", "events": ["*"]}, "url"),  # a host name IDNA refuses
        ({"url": "http://10.1.2.3/hooks", "events": ["*"]}, "url"),  # a private address
        ({"url": "http://169.254.169.254/latest", "events": ["*"]}, "url"),  # cloud metadata
        ({"url": HOOK, "events": ["*"], "secret": "mine"}, "secret"),
        ({"url": HOOK, "events": ["*"], "description": "x" * 201}, "description"),
    ],
)
async def test_bad_input_is_named(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await client.post(URL, json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]], answer.json()
    assert (await client.get(URL)).json()["items"] == []


async def test_a_tenant_has_at_most_twenty(client: httpx.AsyncClient) -> None:
    for _ in range(MAX_PER_TENANT):
        assert (await client.post(URL, json={"url": HOOK, "events": ["*"]})).status_code == 201
    refused = await client.post(URL, json={"url": HOOK, "events": ["*"]})
    assert refused.status_code == 409
    assert len((await client.get(URL)).json()["items"]) == MAX_PER_TENANT


async def test_an_unknown_id_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{URL}/nope")).status_code == 404
    assert (await client.delete(f"{URL}/nope")).status_code == 404
