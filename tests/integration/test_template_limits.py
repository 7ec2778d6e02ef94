"""Templates at the API: how much data a render may go through, and how many renders one API
key may have at once (herald.domain.render_budget, herald.domain.render_pool)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from herald.api.app import create_app
from herald.clock import utcnow
from herald.domain import templates as rendering
from herald.runtime import Runtime
from herald.store import api_keys
from herald.tenancy import DEFAULT_TENANT
from tests.conftest import settings_for

PREVIEW = "/api/v1/templates/t/preview"
SEND = "/api/v1/notifications"


def _template(text: str) -> dict[str, Any]:
    return {"channels": {"email": {"default": {"subject": "Hi", "text": text}}}}


@pytest.mark.parametrize(
    "expression",
    [
        "objs|groupby('a')",
        "objs|sort(attribute='b')",
        "objs|selectattr('a')|list",
        "items|unique|list",
        "items|map('abs')|list",
    ],
)
async def test_iterating_filters_over_large_data_are_refused_at_preview_and_at_send(
    client: httpx.AsyncClient, expression: str
) -> None:
    """Each pass over the data is allowed; ten of them are more than a render's budget."""
    text = "{% for i in range(10) %}{% set x = " + expression + " %}{% endfor %}done"
    assert (await client.put("/api/v1/templates/t", json=_template(text))).status_code == 201
    data = {"items": list(range(20_000)), "objs": [{"a": i % 7, "b": str(i)} for i in range(5_000)]}

    preview = await client.post(PREVIEW, json={"data": data})
    send = await client.post(
        SEND, json={"recipient": "a@example.com", "template": "t", "data": data}
    )
    for response in (preview, send):
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["template"]
        assert "more than 50000 steps" in response.json()["message"]
    assert (await client.get(SEND)).json()["items"] == []


async def test_data_larger_than_a_render_may_go_through_is_refused_naming_data(
    client: httpx.AsyncClient,
) -> None:
    assert (
        await client.put("/api/v1/templates/t", json=_template("{{ items|length }}"))
    ).status_code == 201
    data = {"items": list(range(60_000))}
    request = {"recipient": "a@example.com", "template": "t", "data": data}

    preview = await client.post(PREVIEW, json={"data": data})
    send = await client.post(SEND, json=request)
    for response in (preview, send):
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["data"]
    batch = await client.post(f"{SEND}/batch", json={"items": [request]})
    assert batch.json()["items"][0]["error"]["errors"][0]["field"] == "items[0].data"
    assert (await client.get(SEND)).json()["items"] == []

    # An ordinary notification's data is nowhere near it.
    ordinary = await client.post(PREVIEW, json={"data": {"items": list(range(1_000))}})
    assert ordinary.status_code == 200, ordinary.text
    assert ordinary.json()["rendered"][0]["body"] == "1000"


@pytest.fixture
async def two_keys(
    fresh_sqlite_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], dict[str, str]]]:
    """The API with API keys required; yields a client and the headers of two keys: one that
    can read and send, one admin."""
    runtime = Runtime(settings_for(fresh_sqlite_url))
    await runtime.start(migrate=False)
    try:
        async with runtime.db.write() as conn:
            secrets = [
                (await api_keys.create(conn, DEFAULT_TENANT, name, scopes, now=utcnow()))[1]
                for name, scopes in (("busy", ["read", "send"]), ("other", ["admin"]))
            ]
        busy, other = ({"Authorization": f"Bearer {secret}"} for secret in secrets)
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http, busy, other
    finally:
        await runtime.close()


async def test_a_key_with_too_many_renders_is_refused_while_other_keys_render(
    two_keys: tuple[httpx.AsyncClient, dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from herald.domain.render_pool import RENDERS_PER_KEY

    http, busy, other = two_keys
    release = threading.Event()
    render = rendering.render

    def held(fields: Mapping[str, str], data: Mapping[str, Any], **kwargs: Any) -> Any:
        """A render that takes as long as the test wants: until released."""
        if data.get("hold"):
            release.wait(60)  # a broken build must not hang the run for ever
        return render(fields, data, **kwargs)

    monkeypatch.setattr(rendering, "render", held)
    saved = await http.put("/api/v1/templates/t", json=_template("Hi {{ name }}"), headers=other)
    assert saved.status_code == 201, saved.text
    slow = {"data": {"name": "A", "hold": True}}
    previews = [
        asyncio.create_task(http.post(PREVIEW, json=slow, headers=busy))
        for _ in range(RENDERS_PER_KEY + 1)
    ]
    try:
        # Held renders cannot end, so the first answer is the one refused. (The timeout only
        # keeps a build without admission from waiting for ever.)
        done, _ = await asyncio.wait(previews, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        (refused,) = [task.result() for task in done]
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "1"
        # The busy key is refused at intake too, before anything is stored.
        request = {"recipient": "a@example.com", "template": "t", "data": {"name": "A"}}
        assert (await http.post(SEND, json=request, headers=busy)).status_code == 429

        # Meanwhile another key renders, at preview and at intake.
        preview = await http.post(PREVIEW, json={"data": {"name": "B"}}, headers=other)
        assert preview.status_code == 200, preview.text
        assert preview.json()["rendered"][0]["body"] == "Hi B"
        sent = await http.post(SEND, json={**request, "data": {"name": "B"}}, headers=other)
        assert sent.status_code == 202, sent.text
    finally:
        release.set()
        answers = await asyncio.gather(*previews)

    assert sorted(a.status_code for a in answers) == [200] * RENDERS_PER_KEY + [429]
    listed = (await http.get(SEND, headers=other)).json()["items"]
    assert len(listed) == 1  # the other key's; none of the refused one's
    # Its renders done, the busy key renders again.
    again = await http.post(PREVIEW, json={"data": {"name": "A"}}, headers=busy)
    assert again.status_code == 200, again.text
