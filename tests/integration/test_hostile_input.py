"""Hostile values in every field of every route: NUL, lone surrogates, integers past a
column's range, timestamps that overflow once in UTC, bodies that do not parse. Each is a 422
naming the field (never a 5xx, which also closed the client's keep-alive connection), on
SQLite and on PostgreSQL (which cannot store NUL at all).

Every operation of the OpenAPI schema has a valid request below with every field it takes;
the property test spoils one field at a time and checks the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from herald.api.app import create_app
from herald.api.errors import field_name
from herald.api.pages import encode_cursor
from herald.runtime import Runtime
from tests.conftest import settings_for

ID = "01a23cce-c1a8-7c4b-8171-a2e7370e41d0"  # the shape of every id Herald hands out
LATER = "2030-01-01T00:00:00Z"
TEMPLATE = {"channels": {"email": {"default": {"subject": "Hi {{ name }}", "text": "Hello"}}}}
CONTACTS = {
    "email": "b@example.com",
    "phone": "+14155550100",
    "push_tokens": ["token-1"],
    "web_push": [
        {
            "endpoint": "http://127.0.0.1:9/push/1",  # loopback: allowed in the tests
            "keys": {"p256dh": "BPcMbnWQL5GOYX", "auth": "g2Bs9bvBQ"},
            "expirationTime": 1.7e12,  # a float, kept in JSON: no column to overflow
        }
    ],
    "webhook_url": "http://127.0.0.1:9/hook",
    "apprise_urls": ["json://127.0.0.1:9/"],
}
INLINE = {
    "user_id": "u1",
    "recipient": "a@example.com",
    "contacts": CONTACTS,
    "channels": ["email"],
    "data": {"name": "Ana"},
    "locale": "pt-BR",
    "subject": "Welcome",
    "message": "Welcome to Herald",
    "category": "orders",
    "priority": "high",
    "send_at": LATER,
    "collapse_key": "c-1",
}
FROM_TEMPLATE = {
    "user_id": "u1",
    "channels": ["email"],
    "template": "t",
    "template_version": 1,
    "data": {"name": "Ana"},
}
SELECTION = {
    "status": "DEAD",
    "kind": "delivery",
    "reason": "permanent",
    "channel": "email",
    "provider": "smtp",
    "error_class": "PermanentDeliveryError",
    "since": "2020-01-01T00:00:00Z",
    "until": LATER,
    "dry_run": True,
}
FILTERS = {**{k: v for k, v in SELECTION.items() if k != "dry_run"}, "limit": 10}


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the OpenAPI template, e.g. /api/v1/users/{user_id}
    params: dict[str, str] = field(default_factory=dict)  # path parameters
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None


# A valid request for each operation, with every parameter and body field it takes.
CALLS = [
    Call("POST", "/api/v1/notifications", body=INLINE),
    Call("POST", "/api/v1/notifications", body=FROM_TEMPLATE),
    Call(
        "GET",
        "/api/v1/notifications",
        query={
            "status": "SENT",
            "recipient": "a@example.com",
            "user_id": "u1",
            "channel": "email",
            "since": "2020-01-01T00:00:00Z",
            "until": LATER,
            "limit": 10,
            "cursor": "c",
        },
    ),
    Call("POST", "/api/v1/notifications/batch", body={"items": [INLINE, FROM_TEMPLATE]}),
    Call("GET", "/api/v1/notifications/{notification_id}", {"notification_id": ID}),
    Call("GET", "/api/v1/notifications/{notification_id}/timeline", {"notification_id": ID}),
    Call("POST", "/api/v1/notifications/{notification_id}/cancel", {"notification_id": ID}),
    Call(
        "POST",
        "/api/v1/events",
        body={
            "type": "order.shipped",
            "user_id": "u1",
            "data": {"name": "Ana"},
            "category": "orders",
            "priority": "normal",
            "locale": "pt",
            "send_at": LATER,
            "collapse_key": "c-2",
        },
    ),
    Call(
        "PUT",
        "/api/v1/users/{user_id}",
        {"user_id": "u2"},
        body={**CONTACTS, "locale": "pt-PT", "timezone": "Europe/Lisbon"},
    ),
    Call("GET", "/api/v1/users/{user_id}", {"user_id": "u1"}),
    Call("DELETE", "/api/v1/users/{user_id}", {"user_id": "u1"}),
    Call(
        "POST",
        "/api/v1/users/{user_id}/webhook-secret/rotate",
        {"user_id": "u1"},
        body={"grace_seconds": 60},
    ),
    Call(
        "PUT",
        "/api/v1/users/{user_id}/preferences",
        {"user_id": "u1"},
        body={
            "unsubscribed": False,
            "channels": {"sms": False},
            "categories": {"orders": {"enabled": True, "channels": {"sms": True}}},
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        },
    ),
    Call("GET", "/api/v1/users/{user_id}/preferences", {"user_id": "u1"}),
    Call(
        "GET",
        "/api/v1/users/{user_id}/inbox",
        {"user_id": "u1"},
        query={"status": "unread", "limit": 10, "cursor": "c"},
    ),
    Call(
        "POST",
        "/api/v1/users/{user_id}/inbox/mark",
        {"user_id": "u1"},
        body={"ids": [ID], "all": False, "status": "read"},
    ),
    # (every call here is spoilt, so the stream answers at once instead of streaming)
    Call("GET", "/api/v1/users/{user_id}/inbox/stream", {"user_id": "u1"}),
    Call(
        "PUT",
        "/api/v1/templates/{name}",
        {"name": "t2"},
        body={**TEMPLATE, "category": "orders", "description": "Shipping"},
    ),
    Call("GET", "/api/v1/templates/{name}", {"name": "t"}, query={"version": 1}),
    Call("DELETE", "/api/v1/templates/{name}", {"name": "t"}),
    Call("GET", "/api/v1/templates", query={"limit": 10, "cursor": "t"}),
    Call("GET", "/api/v1/templates/{name}/versions", {"name": "t"}),
    Call(
        "POST",
        "/api/v1/templates/{name}/preview",
        {"name": "t"},
        body={"data": {"name": "Ana"}, "locale": "pt", "version": 1, "channels": ["email"]},
    ),
    Call(
        "PUT",
        "/api/v1/rules/{name}",
        {"name": "r2"},
        body={
            "event_type": "order.shipped",
            "condition": "data.name == 'Ana'",
            "channels": ["email"],
            "template": "t",
            "category": "orders",
            "priority": "high",
            "enabled": True,
        },
    ),
    Call("GET", "/api/v1/rules/{name}", {"name": "r"}),
    Call("DELETE", "/api/v1/rules/{name}", {"name": "r"}),
    Call("GET", "/api/v1/rules", query={"event_type": "order.shipped"}),
    Call("GET", "/api/v1/dead-letters", query={**FILTERS, "cursor": "c"}),
    Call("GET", "/api/v1/dead-letters/{letter_id}", {"letter_id": ID}),
    Call("DELETE", "/api/v1/dead-letters/{letter_id}", {"letter_id": ID}),
    Call("POST", "/api/v1/dead-letters/{letter_id}/replay", {"letter_id": ID}),
    Call("POST", "/api/v1/dead-letters/replay", body={**SELECTION, "limit": 10}),
    Call("POST", "/api/v1/dead-letters/purge", body=SELECTION),
    Call(
        "POST",
        "/api/v1/keys",
        body={"name": "billing", "scopes": ["send", "read"], "expires_at": LATER},
    ),
    Call("GET", "/api/v1/keys/{key_id}", {"key_id": ID}),
    Call("DELETE", "/api/v1/keys/{key_id}", {"key_id": ID}),
    Call("POST", "/api/v1/webhook-secret/rotate", body={"grace_seconds": 60}),
    Call("GET", "/api/v1/suppressions", query={"channel": "email", "limit": 10, "cursor": "c"}),
    Call(
        "GET",
        "/api/v1/suppressions/{channel}/{address}",
        {"channel": "email", "address": "a@example.com"},
    ),
    Call(
        "PUT",
        "/api/v1/suppressions/{channel}/{address}",
        {"channel": "email", "address": "a@example.com"},
        body={"reason": "manual", "detail": "imported"},
    ),
    Call(
        "DELETE",
        "/api/v1/suppressions/{channel}/{address}",
        {"channel": "email", "address": "a@example.com"},
    ),
    Call(
        "POST",
        "/api/v1/webhook-subscriptions",
        body={"url": "http://127.0.0.1:9/h", "events": ["*"], "description": "d"},
    ),
    Call("GET", "/api/v1/webhook-subscriptions"),
    Call("GET", "/api/v1/webhook-subscriptions/{subscription_id}", {"subscription_id": ID}),
    Call("DELETE", "/api/v1/webhook-subscriptions/{subscription_id}", {"subscription_id": ID}),
    Call("GET", "/api/v1/unsubscribe", query={"token": "x.y"}),
    Call("POST", "/api/v1/unsubscribe", query={"token": "x.y"}),
    Call(
        "POST",
        "/api/v1/receipts/twilio/{provider}",
        {"provider": "twilio-main"},
        query={"delivery": ID},
    ),
    Call("POST", "/api/v1/receipts/sendgrid/{provider}", {"provider": "sendgrid-main"}),
    Call("POST", "/api/v1/receipts/mailgun/{provider}", {"provider": "mailgun-main"}),
]
CURSOR = encode_cursor(ID)  # "c" above: a cursor this API could have returned
TIME = re.compile(r"^\d{4}-\d\d-\d\dT")


@dataclass(frozen=True)
class Slot:
    """One value of a call to spoil: where it is, and what kind of value it is."""

    call: Call
    where: str  # path, query, body, or key (a key of an object in the body)
    location: tuple[str | int, ...]  # the parameter's name, or the path to the body value
    kind: str  # text, integer or time

    @property
    def field(self) -> str:
        """The field the 422 must name (for a key, the object that has it)."""
        if self.where in ("path", "query"):
            return str(self.location[0])
        if self.where == "key":
            return field_name(("body", *self.location[:-1]))
        return field_name(("body", *self.location))


def _leaves(value: Any, location: tuple[str | int, ...]) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield "key", (*location, key), key
            yield from _leaves(item, (*location, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*location, i))
    else:
        yield "body", location, value


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "time" if TIME.match(value) else "text"
    return None


def slots(call: Call) -> list[Slot]:
    found = [Slot(call, "path", (name,), "text") for name in call.params]
    for name, value in call.query.items():
        found.append(Slot(call, "query", (name,), _kind(value) or "text"))
    for where, location, value in _leaves(call.body, ()) if call.body is not None else ():
        kind = "text" if where == "key" else _kind(value)
        if kind is not None:
            found.append(Slot(call, where, location, kind))
    return found


SLOTS = [slot for call in CALLS for slot in slots(call)]
# NUL, and lone surrogates (high, low, at either end of their ranges).
UNSTORABLE = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]


def _spoil_text(original: str, bad: list[str]) -> st.SearchStrategy[str]:
    """The value with one of ``bad`` (and a little more text) somewhere in it."""
    # No "/": in a path parameter it would make another path. No surrogate in the tail: after
    # a high one it would pair with it into an ordinary character (and in a URL a lone one
    # cannot be encoded at all: not UTF-8).
    characters = st.characters(exclude_characters="/", exclude_categories=("Cs",))
    tail = st.text(characters, max_size=3)
    return st.builds(
        lambda at, char, more: original[:at] + char + more + original[at:],
        st.integers(0, len(original)),
        st.sampled_from(bad),
        tail,
    )


def _huge_integer() -> st.SearchStrategy[int]:
    """Beyond a 32-bit INTEGER column, and far beyond a 64-bit one too."""
    return st.one_of(
        st.integers(min_value=2**31, max_value=2**64),
        st.integers(min_value=-(2**64), max_value=-(2**31) - 1),
        st.integers(min_value=2**64, max_value=10**4000),
    )


def _overflowing_time() -> st.SearchStrategy[str]:
    """A valid local time whose offset takes it past year 9999, or before year 1, in UTC."""
    late = st.datetimes(min_value=datetime(9999, 12, 31, 12), max_value=datetime.max)
    early = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 1, 11, 59))
    offset = st.integers(min_value=12 * 60, max_value=14 * 60)

    def late_one(moment: datetime, minutes: int) -> str:
        return f"{moment.isoformat()}-{minutes // 60:02d}:{minutes % 60:02d}"

    def early_one(moment: datetime, minutes: int) -> str:
        return f"{moment.isoformat()}+{minutes // 60:02d}:{minutes % 60:02d}"

    return st.one_of(
        st.builds(late_one, late, offset),
        st.builds(early_one, early, offset),
        st.just((datetime.max - timedelta(seconds=1)).isoformat() + "-14:00"),
    )


def _replace(value: Any, location: tuple[str | int, ...], new: Any, key: bool) -> Any:
    """A copy of ``value`` with the item at ``location`` (or that item's key) replaced."""
    if not location:
        return new
    head, rest = location[0], location[1:]
    if isinstance(value, list):
        assert isinstance(head, int)
        return [_replace(v, rest, new, key) if i == head else v for i, v in enumerate(value)]
    assert isinstance(value, dict)
    if key and not rest:
        return {(new if k == head else k): v for k, v in value.items()}
    return {k: (_replace(v, rest, new, key) if k == head else v) for k, v in value.items()}


def _request(
    slot: Slot, spoilt: Any, *, encoded: str | None = None
) -> tuple[str, str, bytes | None]:
    """Method, URL and body, with ``spoilt`` in the slot (or, in a URL, ``encoded`` as it
    is). Bodies are encoded with escapes, as any JSON library does for a lone surrogate."""
    call = slot.call
    params = {k: quote(v, safe="") for k, v in call.params.items()}
    query = {k: quote(str(CURSOR if k == "cursor" else v), safe="") for k, v in call.query.items()}
    body = call.body
    name = str(slot.location[0])
    if slot.where in ("path", "query"):
        in_url = encoded if encoded is not None else quote(str(spoilt), safe="")
        (params if slot.where == "path" else query)[name] = in_url
    else:
        body = _replace(body, slot.location, spoilt, key=slot.where == "key")
    url = call.path.format(**params) + "?" + "&".join(f"{k}={v}" for k, v in query.items())
    content = None if body is None else json.dumps(body).encode()
    return call.method, url, content


def _spoiled(slot: Slot) -> st.SearchStrategy[Any]:
    if slot.kind == "integer":
        return _huge_integer()
    if slot.kind == "time":
        return _overflowing_time()
    original = str(slot.location[-1] if slot.where == "key" else _value(slot))
    # A URL cannot carry a lone surrogate (it is not UTF-8): NUL only, there.
    in_url = slot.where in ("path", "query")
    return _spoil_text(original, ["\x00"] if in_url else UNSTORABLE)


def _value(slot: Slot) -> Any:
    if slot.where == "path":
        return slot.call.params[str(slot.location[0])]
    if slot.where == "query":
        return slot.call.query[str(slot.location[0])]
    value = slot.call.body
    for part in slot.location:
        value = value[part]
    return value


def openapi() -> dict[str, Any]:
    """The schema /openapi.json serves (it needs no database)."""
    document: dict[str, Any] = create_app(Runtime(settings_for("sqlite:///unopened.db"))).openapi()
    return document


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    # No rate limit: the test sends hundreds of requests.
    rt = Runtime(settings_for(database_url, rate_limit_per_second=0))
    await rt.start(migrate=False)
    yield rt
    await rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Herald with a user, a template and a rule the valid requests name. A 500 is answered,
    not raised, so that every spoilt field is reported."""
    app = create_app(runtime, open_access=True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        for method, url, body in [
            ("PUT", "/api/v1/users/u1", {"email": "a@example.com"}),
            ("PUT", "/api/v1/templates/t", TEMPLATE),
            (
                "PUT",
                "/api/v1/rules/r",
                {"event_type": "order.shipped", "channels": ["email"], "template": "t"},
            ),
        ]:
            response = await http.request(method, url, json=body)
            assert response.status_code < 300, response.text
        yield http


def test_every_operation_and_field_is_covered() -> None:
    """A new route, parameter or body field must be added to CALLS (and so gets spoilt)."""
    spec = openapi()
    schemas = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] != "header"}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not names and body is None:
                continue  # nothing to spoil
            calls = [c for c in CALLS if (c.method, c.path) == (method.upper(), path)]
            assert calls, f"{method.upper()} {path} has no call in CALLS"
            for call in calls:
                assert names == set(call.params) | set(call.query), (method, path)
            if body is not None:
                [name] = re.findall(r"#/components/schemas/(\w+)", json.dumps(body["schema"]))
                given_fields = {f for c in calls for f in c.body}
                assert set(schemas[name]["properties"]) <= given_fields, (method, path)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same values on every run: what fails in CI fails locally
    # No shrinking: the report lists every field that failed, with its value, already (and
    # shrinking would replay hundreds of requests against a database they changed).
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_a_hostile_value_in_any_field_is_a_422_naming_it(
    client: httpx.AsyncClient, data: st.DataObject
) -> None:
    wrong = []
    for slot in SLOTS:
        spoilt = data.draw(_spoiled(slot), label=f"{slot.call.method} {slot.call.path} {slot}")
        method, url, body = _request(slot, spoilt)
        headers = {"content-type": "application/json"} if body is not None else {}
        response = await client.request(method, url, content=body, headers=headers)
        named = []
        if response.status_code == 422:
            problem = response.json()
            assert set(problem) == {"code", "message", "errors"}, problem
            named = [e["field"] for e in problem["errors"]]
        if response.status_code != 422 or slot.field not in named:
            wrong.append((method, url[:120], slot.field, response.status_code, response.text))
    assert wrong == [], "\n".join(map(str, wrong))


@pytest.mark.parametrize(
    "raw", ["%ED%A0%80", "%FF", "%C3"], ids=["utf8-surrogate", "invalid-byte", "truncated"]
)
async def test_invalid_utf8_in_a_url_is_never_a_server_error(
    client: httpx.AsyncClient, raw: str
) -> None:
    """Starlette decodes it to U+FFFD, which is harmless text: an answer, never a 5xx."""
    for slot in SLOTS:
        if slot.where not in ("path", "query") or slot.kind != "text":
            continue
        method, url, body = _request(slot, None, encoded=f"x{raw}")
        headers = {"content-type": "application/json"} if body is not None else {}
        response = await client.request(method, url, content=body, headers=headers)
        assert response.status_code < 500, (method, url, response.text)


BODY_ROUTES = sorted({(c.method, c.path, json.dumps(c.params)) for c in CALLS if c.body})


def _deep(levels: int) -> bytes:
    return b'{"data": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested deeper"),
        (_deep(1000), "nested deeper"),
        (_deep(200), "nested deeper"),
        (b'{"data": {"n": ' + b"7" * 5000 + b"}}", "more than 4300 digits"),
        (b'{"data": {"n": 1e999}}', "too large"),
        (b'{"data": {"n": NaN}}', "NaN is not JSON"),
        (b'{"data": {"n": -Infinity}}', "-Infinity is not JSON"),
        (b'{"recipient": "\xff\xfe"}', "not UTF-8"),
        (b'{"recipient": ', "not valid JSON"),
    ],
    ids=[
        "array-1000-deep",
        "object-1000-deep",
        "object-200-deep",
        "5000-digits",
        "float-overflow",
        "nan",
        "infinity",
        "invalid-utf8",
        "truncated",
    ],
)
async def test_a_body_that_does_not_parse_is_a_422_naming_body(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    for method, path, params in BODY_ROUTES:
        url = path.format(**json.loads(params))
        response = await client.request(
            method, url, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (method, url, response.text)
        problem = response.json()
        assert [e["field"] for e in problem["errors"]] == ["body"], problem
        assert says in problem["message"], problem


def test_every_integer_a_request_gives_fits_a_32_bit_column() -> None:
    """Integers reach INTEGER columns (template versions) or page sizes: each is bounded."""
    spec = openapi()
    schemas = spec["components"]["schemas"]
    unbounded: list[str] = []
    seen: set[str] = set()

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            low, high = node.get("minimum", -(2**63)), node.get("maximum", 2**63)
            if node.get("type") == "integer" and not -(2**31) <= low <= high < 2**31:
                unbounded.append(where)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.rsplit("/", 1)[-1] not in seen:
                seen.add(name := ref.rsplit("/", 1)[-1])
                visit(schemas[name], name)
            for key, value in node.items():
                visit(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():  # parameters, and request bodies
            where = f"{method.upper()} {path}"
            visit(operation.get("parameters", []), where)
            visit(operation.get("requestBody", {}), where)
    assert seen >= {"NotificationCreate", "TemplateIn", "PreviewIn", "ReplaySelection"}
    assert unbounded == []
