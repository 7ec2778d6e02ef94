"""API keys, scopes and tenants: every /api/v1 route needs a key with the right scope, and a
tenant never sees another's objects (OWASP API1 BOLA, API2, API5)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from herald.api.app import create_app
from herald.clock import utcnow
from herald.runtime import Runtime
from herald.store import api_keys, circuits, deadletters
from herald.store.deadletters import DeadLetter

# The scope each route needs. A new route must be added here, so nobody forgets to decide.
SCOPES = {
    ("POST", "/api/v1/notifications"): "send",
    ("POST", "/api/v1/notifications/batch"): "send",
    ("GET", "/api/v1/notifications"): "read",
    ("GET", "/api/v1/notifications/{notification_id}"): "read",
    ("GET", "/api/v1/notifications/{notification_id}/timeline"): "read",
    ("POST", "/api/v1/notifications/{notification_id}/cancel"): "send",
    ("POST", "/api/v1/events"): "send",
    ("PUT", "/api/v1/users/{user_id}"): "send",
    ("GET", "/api/v1/users/{user_id}"): "read",
    ("DELETE", "/api/v1/users/{user_id}"): "send",
    ("POST", "/api/v1/users/{user_id}/webhook-secret/rotate"): "send",
    ("PUT", "/api/v1/users/{user_id}/preferences"): "send",
    ("GET", "/api/v1/users/{user_id}/preferences"): "read",
    ("GET", "/api/v1/users/{user_id}/inbox"): "read",
    ("POST", "/api/v1/users/{user_id}/inbox/mark"): "send",
    ("GET", "/api/v1/users/{user_id}/inbox/stream"): "read",
    ("PUT", "/api/v1/templates/{name}"): "admin",
    ("GET", "/api/v1/templates"): "read",
    ("GET", "/api/v1/templates/{name}"): "read",
    ("GET", "/api/v1/templates/{name}/versions"): "read",
    ("DELETE", "/api/v1/templates/{name}"): "admin",
    ("POST", "/api/v1/templates/{name}/preview"): "read",
    ("PUT", "/api/v1/rules/{name}"): "admin",
    ("GET", "/api/v1/rules"): "read",
    ("GET", "/api/v1/rules/{name}"): "read",
    ("DELETE", "/api/v1/rules/{name}"): "admin",
    ("GET", "/api/v1/dead-letters"): "admin",
    ("GET", "/api/v1/dead-letters/{letter_id}"): "admin",
    ("POST", "/api/v1/dead-letters/{letter_id}/replay"): "admin",
    ("POST", "/api/v1/dead-letters/replay"): "admin",
    ("DELETE", "/api/v1/dead-letters/{letter_id}"): "admin",
    ("POST", "/api/v1/dead-letters/purge"): "admin",
    ("GET", "/api/v1/providers"): "admin",
    ("POST", "/api/v1/keys"): "admin",
    ("GET", "/api/v1/keys"): "admin",
    ("GET", "/api/v1/keys/{key_id}"): "admin",
    ("DELETE", "/api/v1/keys/{key_id}"): "admin",
    # The caller's tenant's own: no id, so nothing another tenant could name (see
    # tests/integration/test_tenant_webhook_secrets.py).
    ("GET", "/api/v1/webhook-secret"): "admin",
    ("POST", "/api/v1/webhook-secret/rotate"): "admin",
    # The tenant's suppression list: read to look, admin to change (a removal sends again).
    ("GET", "/api/v1/suppressions"): "read",
    ("GET", "/api/v1/suppressions/{channel}/{address}"): "read",
    ("PUT", "/api/v1/suppressions/{channel}/{address}"): "admin",
    ("DELETE", "/api/v1/suppressions/{channel}/{address}"): "admin",
    ("POST", "/api/v1/webhook-subscriptions"): "admin",
    ("GET", "/api/v1/webhook-subscriptions"): "read",
    ("GET", "/api/v1/webhook-subscriptions/{subscription_id}"): "read",
    ("DELETE", "/api/v1/webhook-subscriptions/{subscription_id}"): "admin",
    # Bounces piped in by the operator's MTA (any tenant's deliveries: the operator's only).
    ("POST", "/api/v1/receipts/mail"): "admin",
}
# Reached from an email link, proven by the token in it rather than by a key; a provider's
# receipts, proven by the provider's signature (tests/integration/test_receipts.py).
PUBLIC = {
    ("GET", "/api/v1/unsubscribe"),
    ("POST", "/api/v1/unsubscribe"),
    ("POST", "/api/v1/receipts/twilio/{provider}"),
    ("POST", "/api/v1/receipts/sendgrid/{provider}"),
    ("POST", "/api/v1/receipts/mailgun/{provider}"),
}
GREETING = {"channels": {"email": {"default": {"subject": "Hi {{ name }}", "text": "Hello"}}}}


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every /api/v1 operation the application publishes in its OpenAPI schema."""
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    }


@dataclass
class Tenants:
    client: httpx.AsyncClient
    runtime: Runtime
    keys: dict[str, str]  # name -> secret

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture
async def tenants(runtime: Runtime) -> AsyncIterator[Tenants]:
    keys = {}
    now = utcnow()
    async with runtime.db.write() as conn:
        for name, tenant, scopes, expires in [
            ("a-admin", "acme", ["admin"], None),
            ("b-admin", "globex", ["admin"], None),
            ("a-send", "acme", ["send"], None),
            ("a-read", "acme", ["read"], None),
            ("a-send-read", "acme", ["send", "read"], None),
            ("expired", "acme", ["admin"], now - timedelta(seconds=1)),
            ("revoked", "acme", ["admin"], None),
        ]:
            record, keys[name] = await api_keys.create(
                conn, tenant, name, scopes, now=now, expires_at=expires
            )
            if name == "revoked":
                await api_keys.revoke(conn, record.id, tenant=None, now=now)
    # Hundreds of refused calls from one address: the rate limit has tests of its own.
    runtime.rate_limiter = None
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield Tenants(http, runtime, keys)


def test_every_api_route_has_a_decided_scope(runtime: Runtime) -> None:
    assert api_routes(create_app(runtime)) == set(SCOPES) | PUBLIC


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_refuses_calls_without_a_valid_key(tenants: Tenants) -> None:
    for method, path in sorted(SCOPES):
        for headers in (
            {},
            {"Authorization": "Bearer hk_not-a-key"},
            {"Authorization": tenants.keys["a-admin"]},  # no scheme
            {"Authorization": f"Basic {tenants.keys['a-admin']}"},
            tenants.auth("expired"),
            tenants.auth("revoked"),
        ):
            response = await tenants.client.request(method, _concrete(path), headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["errors"][0]["field"] == "Authorization"


async def test_every_route_refuses_keys_without_its_scope(tenants: Tenants) -> None:
    lacking = {"send": ["a-read"], "read": ["a-send"], "admin": ["a-send-read"]}
    for (method, path), scope in sorted(SCOPES.items()):
        for key in lacking[scope]:
            response = await tenants.client.request(
                method, _concrete(path), headers=tenants.auth(key)
            )
            assert response.status_code == 403, (method, path, key, response.text)
            assert response.json()["code"] == "forbidden"


async def test_a_key_with_the_scope_gets_through(tenants: Tenants) -> None:
    send, read = tenants.auth("a-send"), tenants.auth("a-read")
    created = await tenants.client.post(
        "/api/v1/notifications",
        json={"recipient": "a@example.com", "subject": "s", "message": "m"},
        headers=send,
    )
    assert created.status_code == 202
    found = await tenants.client.get(f"/api/v1/notifications/{created.json()['id']}", headers=read)
    assert found.status_code == 200


async def test_the_open_mode_needs_no_key(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        assert (await http.get("/api/v1/dead-letters")).status_code == 200


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        ("localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("app.localhost", True),
        ("attacker.example:8000", False),  # a DNS name rebound to 127.0.0.1
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example", False),
        ("0.0.0.0:8000", False),
        ("", False),
    ],
)
async def test_an_open_api_answers_only_hosts_naming_loopback(
    runtime: Runtime, host: str, answered: bool
) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.get("/api/v1/dead-letters", headers={"Host": host})
    if answered:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert response.json()["code"] == "host_not_allowed"
        assert [e["field"] for e in response.json()["errors"]] == ["Host"]


async def test_an_api_open_until_the_first_key_closes_when_one_exists_anywhere(
    runtime: Runtime,
) -> None:
    """Two API processes that started open (herald serve, no key yet): a key made by another
    process (herald keys create) closes both within a second; one made through the API
    closes its own at once."""
    apps = [create_app(runtime, open_access=True, until_first_key=True) for _ in range(2)]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
        for app in apps
    ]
    async with clients[0] as first, clients[1] as second:
        assert (await first.get("/api/v1/dead-letters")).status_code == 200
        created = await first.post("/api/v1/keys", json={"name": "ops", "scopes": ["admin"]})
        assert created.status_code == 201
        assert (await first.get("/api/v1/dead-letters")).status_code == 401  # at once
        await asyncio.sleep(1.1)  # the other process looks again within a second
        assert (await second.get("/api/v1/dead-letters")).status_code == 401
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await second.get("/api/v1/dead-letters", headers=key)).status_code == 200


async def test_an_explicitly_open_api_stays_open_when_a_key_is_made(runtime: Runtime) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        created = await http.post("/api/v1/keys", json={"name": "ops", "scopes": ["admin"]})
        assert created.status_code == 201
        await asyncio.sleep(1.1)
        assert (await http.get("/api/v1/dead-letters")).status_code == 200


async def _seed_acme(t: Tenants) -> dict[str, str]:
    """One of each kind of object, owned by tenant acme."""
    admin = t.auth("a-admin")
    c = t.client
    assert (await c.put("/api/v1/users/alice", json={"email": "a@x.io"}, headers=admin)).is_success
    assert (await c.put("/api/v1/templates/greeting", json=GREETING, headers=admin)).is_success
    rule = {"event_type": "signup", "channels": ["email"], "template": "greeting"}
    assert (await c.put("/api/v1/rules/welcome", json=rule, headers=admin)).is_success
    sent = await c.post(
        "/api/v1/notifications",
        json={"user_id": "alice", "subject": "s", "message": "m"},
        headers={**admin, "Idempotency-Key": "order-1"},
    )
    assert sent.status_code == 202
    notification_id = sent.json()["id"]
    key = await c.post("/api/v1/keys", json={"name": "k", "scopes": ["read"]}, headers=admin)
    assert key.status_code == 201
    now = utcnow()
    letter = DeadLetter(
        id="01900000-0000-7000-8000-00000000dead",
        kind="delivery",
        status=deadletters.DEAD,
        reason="permanent",
        error_class="PermanentDeliveryError",
        error="refused",
        channel="email",
        provider="smtp",
        notification_id=notification_id,
        delivery_id=None,
        topic="herald.deliveries.email",
        key="alice",
        source=None,
        payload=b"{}",
        headers={},
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
        replay_count=0,
        replayed_at=None,
    )
    async with t.runtime.db.write() as conn:
        await deadletters.insert(conn, letter)
    suppressed = await t.client.put(
        "/api/v1/suppressions/email/alice@example.com", headers=t.auth("a-admin")
    )
    assert suppressed.status_code == 201
    subscription = await t.client.post(
        "/api/v1/webhook-subscriptions",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]},
        headers=t.auth("a-admin"),
    )
    assert subscription.status_code == 201, subscription.text
    return {
        "subscription_id": subscription.json()["id"],
        "channel": "email",
        "address": "alice@example.com",
        "notification_id": notification_id,
        "user_id": "alice",
        "name": "",  # templates and rules, by prefix below
        "letter_id": letter.id,
        "key_id": key.json()["id"],
    }


def _path_for(path: str, ids: dict[str, str]) -> str:
    if path.startswith("/api/v1/templates/"):
        ids = {**ids, "name": "greeting"}
    elif path.startswith("/api/v1/rules/"):
        ids = {**ids, "name": "welcome"}
    return re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path)


# What each route needs in its body to get past validation to the lookup.
BODIES: dict[tuple[str, str], object] = {
    ("PUT", "/api/v1/users/{user_id}/preferences"): {},
    ("POST", "/api/v1/users/{user_id}/inbox/mark"): {"all": True},
    ("POST", "/api/v1/templates/{name}/preview"): {"data": {"name": "x"}},
}
# PUT creates or replaces by name: another tenant's PUT makes its own object of that name.
UPSERTS = {
    ("PUT", "/api/v1/users/{user_id}"),
    ("PUT", "/api/v1/templates/{name}"),
    ("PUT", "/api/v1/rules/{name}"),
    ("PUT", "/api/v1/suppressions/{channel}/{address}"),
}


async def test_another_tenants_objects_are_404_on_every_route_with_an_id(
    tenants: Tenants,
) -> None:
    ids = await _seed_acme(tenants)
    other = tenants.auth("b-admin")
    checked = 0
    for method, path in sorted(SCOPES):
        if "{" not in path or (method, path) in UPSERTS:
            continue
        url = _path_for(path, ids)
        body = BODIES.get((method, path))
        response = await tenants.client.request(method, url, json=body, headers=other)
        assert response.status_code == 404, (method, url, response.text)
        checked += 1
    assert checked == 26
    # acme's own key still finds all of it: nothing was deleted, replayed or changed.
    mine = tenants.auth("a-admin")
    for path in (
        "/api/v1/notifications/{notification_id}",
        "/api/v1/users/{user_id}",
        "/api/v1/templates/{name}",
        "/api/v1/rules/{name}",
        "/api/v1/dead-letters/{letter_id}",
        "/api/v1/keys/{key_id}",
        "/api/v1/suppressions/{channel}/{address}",
        "/api/v1/webhook-subscriptions/{subscription_id}",
    ):
        response = await tenants.client.get(_path_for(path, ids), headers=mine)
        assert response.status_code == 200, (path, response.text)
    letter = await tenants.client.get(
        _path_for("/api/v1/dead-letters/{letter_id}", ids), headers=mine
    )
    assert letter.json()["status"] == "DEAD"


async def test_lists_show_only_the_callers_tenant(tenants: Tenants) -> None:
    await _seed_acme(tenants)
    other = tenants.auth("b-admin")
    c = tenants.client
    assert (await c.get("/api/v1/notifications", headers=other)).json()["items"] == []
    assert (await c.get("/api/v1/templates", headers=other)).json()["items"] == []
    assert (await c.get("/api/v1/suppressions", headers=other)).json()["items"] == []
    assert (await c.get("/api/v1/webhook-subscriptions", headers=other)).json()["items"] == []
    assert (await c.get("/api/v1/rules", headers=other)).json() == []
    assert (await c.get("/api/v1/dead-letters", headers=other)).json()["items"] == []
    keys = (await c.get("/api/v1/keys", headers=other)).json()
    assert {k["tenant"] for k in keys} == {"globex"}
    purge = await c.post("/api/v1/dead-letters/purge", json={}, headers=other)
    assert purge.json()["purged"] == 0
    replay = await c.post("/api/v1/dead-letters/replay", json={}, headers=other)
    assert replay.json()["matched"] == 0
    # An event of acme's type triggers nothing for globex: rules are per tenant.
    event = await c.post(
        "/api/v1/events", json={"type": "signup", "user_id": "alice"}, headers=other
    )
    assert event.status_code == 202
    assert event.json()["matched_rules"] == []


async def test_a_tenant_sees_each_providers_state_but_not_the_operators_workers(
    tenants: Tenants,
) -> None:
    async with tenants.runtime.db.write() as conn:
        for worker, state in (("host-1:10", "open"), ("host-2:20", "closed")):
            record = circuits.CircuitRecord("smtp", worker, "email", state, 3, None, utcnow())
            await circuits.save(conn, record)
    rows = (await tenants.client.get("/api/v1/providers", headers=tenants.auth("a-admin"))).json()
    assert [(r["provider"], r["worker"], r["state"]) for r in rows] == [("smtp", None, "open")]
    # The operator's tenant is the default one (open mode here): every worker's circuit.
    transport = httpx.ASGITransport(app=create_app(tenants.runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        rows = (await http.get("/api/v1/providers")).json()
    assert {r["worker"] for r in rows} == {"host-1:10", "host-2:20"}


async def test_tenants_name_things_alike_without_meeting(tenants: Tenants) -> None:
    await _seed_acme(tenants)
    other = tenants.auth("b-admin")
    c = tenants.client
    # globex's own "alice": a new user, acme's is untouched.
    made = await c.put("/api/v1/users/alice", json={"email": "b@y.io"}, headers=other)
    assert made.status_code == 201
    acme = await c.get("/api/v1/users/alice", headers=tenants.auth("a-admin"))
    assert acme.json()["email"] == "a@x.io"
    # The same Idempotency-Key from another tenant is another request, not a replay.
    sent = await c.post(
        "/api/v1/notifications",
        json={"user_id": "alice", "subject": "s", "message": "m"},
        headers={**other, "Idempotency-Key": "order-1"},
    )
    assert sent.status_code == 202
    assert "Idempotent-Replayed" not in sent.headers
    # Notifications to an id render with that tenant's user.
    assert sent.json()["deliveries"][0]["recipient"] == "b@y.io"


async def test_keys_made_through_the_api_work_and_are_shown_once(tenants: Tenants) -> None:
    c = tenants.client
    admin = tenants.auth("a-admin")
    made = await c.post("/api/v1/keys", json={"name": "svc", "scopes": ["send"]}, headers=admin)
    assert made.status_code == 201
    secret, key_id = made.json()["key"], made.json()["id"]
    assert made.json()["tenant"] == "acme"
    listed = (await c.get("/api/v1/keys", headers=admin)).text
    assert secret not in listed
    assert secret[:10] in listed
    async with tenants.runtime.db.read() as conn:
        stored = await api_keys.get(conn, key_id, tenant="acme")
    assert stored is not None
    body = {"recipient": "a@example.com", "subject": "s", "message": "m"}
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await c.post("/api/v1/notifications", json=body, headers=headers)).status_code == 202
    assert (await c.delete(f"/api/v1/keys/{key_id}", headers=admin)).status_code == 204
    # Revocation reaches this process's cache within KEY_CACHE_SECONDS; a fresh app at once.
    fresh = httpx.ASGITransport(app=create_app(tenants.runtime))
    async with httpx.AsyncClient(transport=fresh, base_url="http://localhost") as http:
        refused = await http.post("/api/v1/notifications", json=body, headers=headers)
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["root"]}, "scopes[0]"),
        ({"name": "k", "scopes": ["send"], "tenant_id": "globex"}, "tenant_id"),
        ({"name": "", "scopes": ["send"]}, "name"),
        ({"name": "k", "scopes": ["send"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
async def test_bad_key_requests_name_the_field(
    tenants: Tenants, body: dict[str, object], field: str
) -> None:
    response = await tenants.client.post("/api/v1/keys", json=body, headers=tenants.auth("a-admin"))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


def _closed(schema: dict[str, object], components: dict[str, dict[str, object]]) -> list[str]:
    """Names of the object schemas reachable from ``schema`` that accept unknown fields."""
    open_ones: list[str] = []
    seen: set[str] = set()

    def visit(node: object, name: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target = ref.rsplit("/", 1)[-1]
                if target not in seen:
                    seen.add(target)
                    visit(components[target], target)
                return
            is_object = node.get("type") == "object" and "properties" in node
            if is_object and node.get("additionalProperties") is not False:
                open_ones.append(name)
            for value in node.values():
                visit(value, name)
        elif isinstance(node, list):
            for value in node:
                visit(value, name)

    visit(schema, "body")
    return open_ones


def test_no_request_body_accepts_unknown_fields(runtime: Runtime) -> None:
    """Mass assignment (API3): every body schema, nested ones too, forbids extra fields."""
    spec = create_app(runtime).openapi()
    components = spec["components"]["schemas"]
    bodies = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            bodies += 1
            assert _closed(body["schema"], components) == [], (method, path)
    assert bodies >= 13


@pytest.mark.parametrize("field", ["status", "tenant_id", "attempts", "id", "created_at"])
async def test_server_owned_fields_are_refused(tenants: Tenants, field: str) -> None:
    body = {"recipient": "a@example.com", "subject": "s", "message": "m", field: "x"}
    response = await tenants.client.post(
        "/api/v1/notifications", json=body, headers=tenants.auth("a-send")
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]
