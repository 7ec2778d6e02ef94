"""The OpenAPI document says how to authenticate, which headers answers carry and what a
webhook receiver gets; /docs works without internet."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald.api.app import create_app
from herald.channels.base import OutboundMessage
from herald.channels.webhook import payload
from herald.runtime import Runtime
from tests.conftest import settings_for

# Answered without an API key: probes, metrics, docs, the link in an email, and receipts
# (signed by their provider).
KEYLESS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/unsubscribe",
    "/api/v1/receipts/twilio/{provider}",
    "/api/v1/receipts/sendgrid/{provider}",
    "/api/v1/receipts/mailgun/{provider}",
}


@pytest.fixture
async def http(fresh_sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(settings_for(fresh_sqlite_url))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client
    await runtime.close()


@pytest.fixture
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_route_that_needs_a_key_declares_bearer_auth(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    for path, method, operation in operations(document):
        expected = None if path in KEYLESS else [{"apiKey": []}]
        assert operation.get("security") == expected, f"{method.upper()} {path}"


async def test_the_headers_answers_carry_are_declared(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        responses = operation["responses"]
        for status, header in (("401", "WWW-Authenticate"), ("429", "Retry-After")):
            if status in responses:
                assert header in responses[status].get("headers", {}), f"{method} {path} {status}"
        if path.startswith("/api/v1"):
            assert "Retry-After" in responses["503"]["headers"], f"{method} {path}"
    accepted = document["paths"]["/api/v1/notifications"]["post"]["responses"]["202"]["headers"]
    assert set(accepted) == {"Location", "Idempotent-Replayed"}


async def test_the_webhook_payload_is_declared_field_for_field(document: dict[str, Any]) -> None:
    operation = document["webhooks"]["notification"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    declared = document["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    message = OutboundMessage("d", "n", "webhook", "https://example.com/h", "S", "B", attempt=1)
    assert set(declared) == set(json.loads(payload(message)))


async def test_the_docs_page_loads_its_assets_from_herald(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f'"/docs/assets/{asset}"' in page.text
        served = await http.get(f"/docs/assets/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 100_000
