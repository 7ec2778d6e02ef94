"""POST /api/v1/notifications and .../batch take a quicker way in for a request in order
(api/quick_accept.py) and FastAPI's own for any other: each request below gets the same answer
both ways, and an accepted one is served without FastAPI's routing and dependency resolution,
counted in the metrics under its route as before."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fastapi.routing
import httpx
import pytest
from prometheus_client import REGISTRY

from herald.api import quick_accept
from herald.api.app import create_app
from herald.clock import utcnow
from herald.runtime import Runtime
from herald.store import api_keys

URL = "/api/v1/notifications"
BATCH_URL = f"{URL}/batch"
GOOD = {"recipient": "a@example.com", "subject": "Hi", "message": "Hello"}
JSON = {"content-type": "application/json"}

# (name, key to use, headers, body): a body of bytes is sent as it is, else as JSON.
CASES: list[tuple[str, str, dict[str, Any], Any]] = [
    ("accepted", "send", JSON, GOOD),
    ("accepted with a charset", "send", {"content-type": "application/json; charset=utf-8"}, GOOD),
    ("accepted with a key", "send", {**JSON, "Idempotency-Key": "k-{run}"}, GOOD),
    ("a repeated key", "send", {**JSON, "Idempotency-Key": "k-{run}"}, GOOD),
    ("a reused key", "send", {**JSON, "Idempotency-Key": "k-{run}"}, {**GOOD, "message": "B"}),
    ("no content type", "send", {}, b'{"recipient": "a@example.com", "message": "x"}'),
    ("text/plain", "send", {"content-type": "text/plain"}, b'{"recipient": "a@example.com"}'),
    ("bad JSON", "send", JSON, b'{"recipient": '),
    ("not UTF-8", "send", JSON, b'{"recipient": "\xff"}'),
    ("an empty body", "send", JSON, b""),
    ("a JSON list", "send", JSON, b"[]"),
    ("a bad address", "send", JSON, {**GOOD, "recipient": "nope"}),
    ("an unknown field", "send", JSON, {**GOOD, "colour": "red"}),
    ("a long key", "send", {**JSON, "Idempotency-Key": "k" * 256}, GOOD),
    ("a non-ASCII key", "send", {**JSON, "Idempotency-Key": "clé".encode()}, GOOD),
    ("an empty key", "send", {**JSON, "Idempotency-Key": ""}, GOOD),
    ("a reader's key", "read", JSON, GOOD),
    ("no key", "", JSON, GOOD),
    ("an unknown key", "unknown", JSON, GOOD),
    ("a planning error", "send", JSON, {"user_id": "nobody", "message": "x"}),
]
# A batch is sent each JSON body above as its one item, and these as they are.
BATCH_CASES: list[tuple[str, str, dict[str, Any], Any]] = [
    ("two items", "send", JSON, {"items": [GOOD, {**GOOD, "recipient": "b@example.com"}]}),
    ("one item refused", "send", JSON, {"items": [GOOD, {"user_id": "nobody", "message": "x"}]}),
    ("one item invalid", "send", JSON, {"items": [GOOD, {**GOOD, "recipient": "nope"}]}),
    ("no items", "send", JSON, {"items": []}),
    ("items not a list", "send", JSON, {"items": GOOD}),
    ("too many items", "send", JSON, {"items": [GOOD] * 1001}),
]


def cases(url: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    if url == URL:
        return CASES
    wrapped = [
        (name, key, headers, body if isinstance(body, bytes) else {"items": [body]})
        for name, key, headers, body in CASES
    ]
    return wrapped + BATCH_CASES


@pytest.fixture(params=[URL, BATCH_URL])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def api(
    runtime: Runtime, url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    secrets = {"unknown": "hk_unknown"}
    async with runtime.db.write() as conn:
        for scope in ("send", "read"):
            _, secrets[scope] = await api_keys.create(conn, "acme", scope, [scope], now=utcnow())
    runtime.rate_limiter = None  # a case's answer must not depend on the ones before it
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        # The first goes through FastAPI, which shows the quicker way the route.
        auth = {"Authorization": f"Bearer {secrets['send']}"}
        first = await http.post(url, json=GOOD if url == URL else {"items": [GOOD]}, headers=auth)
        assert first.status_code == 202
        yield http, secrets


async def answers(
    http: httpx.AsyncClient, secrets: dict[str, str], url: str, run: str
) -> list[tuple[int, Any]]:
    found = []
    for _, key, headers, body in cases(url):
        headers = {
            name: value.format(run=run) if isinstance(value, str) else value
            for name, value in headers.items()
        }
        if key:
            headers["Authorization"] = f"Bearer {secrets[key]}"
        content = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        response = await http.post(url, headers=headers, content=content, json=json_body)
        found.append((response.status_code, _comparable(response)))
    return found


def _comparable(response: httpx.Response) -> Any:
    """The answer without what differs between two notifications (ids, times)."""
    body = re.sub(r'"[0-9a-f]{8}-[0-9a-f-]{27}"', '"<id>"', response.text)
    body = re.sub(r'"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?"', '"<time>"', body)
    headers = {h: response.headers.get(h) for h in ("content-type", "idempotent-replayed")}
    location = response.headers.get("location")
    return body, headers, location and re.sub(r"[0-9a-f-]{36}", "<id>", location)


async def test_every_request_gets_the_answer_fastapis_handler_gives_it(
    api: tuple[httpx.AsyncClient, dict[str, str]], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, secrets = api
    quick = await answers(http, secrets, url, "quick")

    async def always_fastapi(request: Any, model: Any) -> None:
        return None

    monkeypatch.setattr(quick_accept, "_arguments", always_fastapi)
    fastapi_only = await answers(http, secrets, url, "fastapi")
    for (name, *_), ours, theirs in zip(cases(url), quick, fastapi_only, strict=True):
        assert ours == theirs, name
    assert [status for status, _ in quick][:5] == [202, 202, 202, 202, 422]


async def test_an_accepted_request_skips_fastapis_dependency_resolution(
    api: tuple[httpx.AsyncClient, dict[str, str]], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, secrets = api
    resolved = []
    solve: Callable[..., Awaitable[Any]] = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        resolved.append(kwargs.get("request") or args[0])
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    auth = {"Authorization": f"Bearer {secrets['send']}"}
    one = (lambda body: body) if url == URL else (lambda body: {"items": [body]})
    accepted = await http.post(url, json=one(GOOD), headers=auth)
    assert (accepted.status_code, len(resolved)) == (202, 0)
    refused = await http.post(url, json=one({**GOOD, "recipient": "nope"}), headers=auth)
    assert (refused.status_code, len(resolved)) == (422, 1)


async def test_an_accepted_request_is_counted_under_its_route(
    api: tuple[httpx.AsyncClient, dict[str, str]], url: str
) -> None:
    http, secrets = api
    labels = {"method": "POST", "route": url, "code": "202"}

    def count() -> float:
        return REGISTRY.get_sample_value("herald_http_requests_total", labels) or 0.0

    before = count()
    auth = {"Authorization": f"Bearer {secrets['send']}"}
    body = GOOD if url == URL else {"items": [GOOD]}
    assert (await http.post(url, json=body, headers=auth)).status_code == 202
    assert count() == before + 1
