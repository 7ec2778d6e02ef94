"""Webhooks to inline URLs are signed per tenant: no tenant can have Herald sign a request that
another tenant's receiver accepts (they once all shared HERALD_WEBHOOK_SECRET).

Two tenants with API keys (acme, globex), the real webhook provider with the runtime's secret
lookup, real receivers that verify signatures the documented way, and the admin API that
rotates a tenant's secret and shows when it was made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from herald.api.app import create_app
from herald.channels.base import OutboundMessage, Provider
from herald.channels.webhook import verify_signature
from herald.clock import utcnow
from herald.errors import PermanentDeliveryError
from herald.runtime import Runtime
from herald.store import api_keys
from herald.tenancy import DEFAULT_TENANT
from tests.conftest import settings_for
from tests.fakes.http_server import running
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.pipeline_harness import PipelineFactory

ROTATE = "/api/v1/webhook-secret/rotate"
SHOW = "/api/v1/webhook-secret"
# What every tenant could sign with before: it must sign nothing for any tenant but the default.
OPERATOR_SECRET = "whsec_operator_from_the_environment"


@dataclass
class Tenants:
    runtime: Runtime
    clients: dict[str, httpx.AsyncClient]  # key name -> a client with that key

    async def rotate(self, key: str, grace_seconds: float = 0) -> dict[str, Any]:
        response = await self.clients[key].post(ROTATE, json={"grace_seconds": grace_seconds})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def show(self, key: str) -> dict[str, Any]:
        response = await self.clients[key].get(SHOW)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def tenant_clients(
    runtime: Runtime, keys: Sequence[tuple[str, str, list[str]]]
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client per (name, tenant, scopes), each with an API key of its own."""
    secrets = {}
    async with runtime.db.write() as conn:
        for name, tenant, scopes in keys:
            _, secrets[name] = await api_keys.create(conn, tenant, name, scopes, now=utcnow())
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=False))
    clients = {
        name: httpx.AsyncClient(
            transport=transport,
            base_url="http://localhost",
            headers={"Authorization": f"Bearer {secret}"},
        )
        for name, secret in secrets.items()
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


KEYS = [
    ("acme", "acme", ["admin"]),
    ("globex", "globex", ["admin"]),
    ("operator", DEFAULT_TENANT, ["admin"]),
    ("acme-sender", "acme", ["send", "read"]),
]


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    # The operator's secret is set, as it was for every tenant's inline webhooks.
    rt = Runtime(settings_for(database_url, webhook_secret=OPERATOR_SECRET))
    await rt.start(migrate=False)
    rt.rate_limiter = None
    yield rt
    await rt.close()


@pytest.fixture
async def tenants(runtime: Runtime) -> AsyncIterator[Tenants]:
    async with tenant_clients(runtime, KEYS) as clients:
        yield Tenants(runtime, clients)


@pytest.fixture
async def webhook(runtime: Runtime) -> AsyncIterator[Provider]:
    """The built-in webhook provider as a worker builds it (the runtime's secret lookup)."""
    [provider] = runtime.providers("webhook")
    await provider.start()
    yield provider
    await provider.close()


def message(url: str, tenant: str, **overrides: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": f"dlv-{tenant}-{len(url)}",
        "notification_id": "ntf-1",
        "channel": "webhook",
        "recipient": url,
        "subject": "Invoice paid",
        "body": "Pay out 10 000 to account 42",
        "attempt": 1,
        "tenant_id": tenant,
    }
    values.update(overrides)
    return OutboundMessage(**values)


def signed(receiver: WebhookReceiver, index: int = -1) -> tuple[bytes, str]:
    request = receiver.requests[index]
    return request.body, request.headers["herald-signature"]


async def test_a_tenants_inline_webhook_verifies_with_its_secret_only_end_to_end(
    start_pipeline: PipelineFactory,
) -> None:
    """Each tenant asks for an inline webhook to its own receiver and to the other's: only
    its own accepts, and neither's signature verifies with the other's secret."""
    receivers = {name: WebhookReceiver() for name in ("acme", "globex")}
    secret: dict[str, str] = {}
    async with (
        start_pipeline(channels=("webhook",), webhook_secret=OPERATOR_SECRET) as p,
        tenant_clients(p.runtime, KEYS[:2]) as clients,
    ):
        for name, receiver in receivers.items():
            secret[name] = (await Tenants(p.runtime, clients).rotate(name))["webhook_secret"]
            receiver.secrets.append(secret[name])
        assert secret["acme"] != secret["globex"]
        with running(receivers["acme"]), running(receivers["globex"]):
            sent = {}
            for sender in clients:
                for target, receiver in receivers.items():
                    response = await clients[sender].post(
                        "/api/v1/notifications",
                        json={
                            "contacts": {"webhook_url": f"{receiver.url}/from/{sender}"},
                            "channels": ["webhook"],
                            "subject": "Invoice paid",
                            "message": f"{sender} to {target}",
                        },
                    )
                    assert response.status_code == 202, response.text
                    sent[sender, target] = response.json()["id"]
            done = {k: await _final(clients[k[0]], v) for k, v in sent.items()}

    assert done[("acme", "acme")] == done[("globex", "globex")] == "SENT"
    assert done[("acme", "globex")] == done[("globex", "acme")] == "FAILED"  # 401: permanent
    for name, receiver in receivers.items():
        other = "globex" if name == "acme" else "acme"
        [accepted] = receiver.verified
        [refused] = receiver.unverified
        assert accepted.path == f"/from/{name}"
        assert accepted.json()["tenant"] == name
        assert refused.path == f"/from/{other}"
        assert refused.json()["tenant"] == other
        header = refused.headers["herald-signature"]
        assert verify_signature(refused.body, header, secret[other])
        assert not verify_signature(refused.body, header, secret[name])
        assert not verify_signature(refused.body, header, OPERATOR_SECRET)


async def _final(client: httpx.AsyncClient, notification_id: str) -> str:
    for _ in range(600):
        body = (await client.get(f"/api/v1/notifications/{notification_id}")).json()
        if body["status"] in ("SENT", "FAILED"):
            status: str = body["status"]
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never finished: {body}")


async def test_another_tenant_is_never_signed_with_the_operators_secret(
    tenants: Tenants, webhook: Provider
) -> None:
    """A tenant without a secret gets one of its own, stored, the first time it is needed."""
    receiver = WebhookReceiver([OPERATOR_SECRET])
    with running(receiver):
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            await webhook.send(message(receiver.url, "acme"))
        await webhook.send(message(receiver.url, DEFAULT_TENANT))  # the operator's: unchanged

    body, header = signed(receiver, 0)
    assert not verify_signature(body, header, OPERATOR_SECRET)
    assert header.count("v1=") == 1
    assert [r.json()["tenant"] for r in receiver.verified] == [DEFAULT_TENANT]
    made = await tenants.show("acme")
    assert made["tenant"] == "acme"
    assert made["created_at"] is not None  # made for that delivery, and kept
    assert made["webhook_secrets_active"] == 1
    # Rotating then gives the tenant a secret it knows; the unseen one signs for the grace.
    rotated = await tenants.rotate("acme", grace_seconds=60)
    on_new = WebhookReceiver([rotated["webhook_secret"]])
    with running(on_new):
        await webhook.send(message(on_new.url, "acme"))
    body, header = signed(on_new)
    assert header.count("v1=") == 2
    assert len(on_new.verified) == 1


async def test_the_payload_names_the_tenant_for_inline_urls_and_registered_users(
    tenants: Tenants, webhook: Provider
) -> None:
    inline = (await tenants.rotate("acme"))["webhook_secret"]
    receiver = WebhookReceiver([inline])
    with running(receiver):
        await webhook.send(message(receiver.url, "acme"))
        user = await tenants.clients["acme"].put(
            "/api/v1/users/u1", json={"webhook_url": f"{receiver.url}/users/u1"}
        )
        assert user.status_code == 201, user.text
        receiver.secrets.append(user.json()["webhook_secret"])
        await webhook.send(message(f"{receiver.url}/users/u1", "acme", user_id="u1"))

    assert receiver.unverified == []
    bodies = [r.json() for r in receiver.verified]
    assert [(b["tenant"], b["user_id"]) for b in bodies] == [("acme", None), ("acme", "u1")]
    # The user's own secret signs the user's webhooks, as before; the tenant's does not.
    body, header = signed(receiver)
    assert verify_signature(body, header, user.json()["webhook_secret"])
    assert not verify_signature(body, header, inline)


async def test_a_rotation_keeps_the_old_secret_verifying_for_the_grace_then_only_the_new(
    tenants: Tenants, webhook: Provider
) -> None:
    old = (await tenants.rotate("acme"))["webhook_secret"]
    rotated = await tenants.rotate("acme", grace_seconds=2)
    new = rotated["webhook_secret"]
    assert new != old
    assert rotated["tenant"] == "acme"
    shown = await tenants.show("acme")
    assert shown["webhook_secrets_active"] == 2
    expires = datetime.fromisoformat(rotated["old_secrets_expire_at"])
    assert shown["old_secrets_expire_at"] is not None
    assert datetime.fromisoformat(shown["old_secrets_expire_at"]) == expires
    assert old not in str(shown)  # shown in the rotation only
    assert new not in str(shown)

    on_old, on_new = WebhookReceiver([old]), WebhookReceiver([new])
    with running(on_old), running(on_new):
        await webhook.send(message(on_old.url, "acme"))
        await webhook.send(message(on_new.url, "acme"))
        body, header = signed(on_new)
        assert header.count("v1=") == 2
        assert verify_signature(body, header, old)
        assert verify_signature(body, header, new)

        await asyncio.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.1)
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            await webhook.send(message(on_old.url, "acme", delivery_id="after-grace"))
        await webhook.send(message(on_new.url, "acme", delivery_id="after-grace"))

    assert (len(on_old.verified), len(on_old.unverified)) == (1, 1)
    assert len(on_new.verified) == 2
    body, header = signed(on_new)
    assert header.count("v1=") == 1
    assert verify_signature(body, header, new)
    assert not verify_signature(body, header, old)
    after = await tenants.show("acme")
    assert (after["webhook_secrets_active"], after["old_secrets_expire_at"]) == (1, None)


async def test_each_tenant_sees_and_rotates_only_its_own_secret(
    tenants: Tenants, webhook: Provider
) -> None:
    acme = (await tenants.rotate("acme"))["webhook_secret"]
    before = await tenants.show("acme")
    globex = await tenants.rotate("globex", grace_seconds=3600)
    assert globex["tenant"] == "globex"
    assert (await tenants.show("globex"))["tenant"] == "globex"
    # globex's rotation left acme's alone: still one secret, the same one, signing alone.
    assert await tenants.show("acme") == before
    receiver = WebhookReceiver([acme])
    with running(receiver):
        await webhook.send(message(receiver.url, "acme"))
    body, header = signed(receiver)
    assert header.count("v1=") == 1
    assert verify_signature(body, header, acme)
    assert not verify_signature(body, header, globex["webhook_secret"])
    # There is nothing to name another tenant with: the tenant is the caller's key's.
    for name in ("tenant", "tenant_id"):
        refused = await tenants.clients["globex"].post(ROTATE, json={name: "acme"})
        assert refused.status_code == 422, refused.text
    assert await tenants.show("acme") == before
    # Only an admin may: a key that sends and reads gets 403.
    sender = tenants.clients["acme-sender"]
    assert (await sender.post(ROTATE)).status_code == 403
    assert (await sender.get(SHOW)).status_code == 403


async def test_the_default_tenant_keeps_herald_webhook_secret_until_it_rotates(
    tenants: Tenants, webhook: Provider
) -> None:
    shown = await tenants.show("operator")
    assert shown["created_at"] is None  # HERALD_WEBHOOK_SECRET, not a stored one
    assert shown["webhook_secrets_active"] == 1

    rotated = await tenants.rotate("operator", grace_seconds=3600)
    receiver = WebhookReceiver([OPERATOR_SECRET])
    with running(receiver):
        await webhook.send(message(receiver.url, DEFAULT_TENANT))
        body, header = signed(receiver)
        assert verify_signature(body, header, rotated["webhook_secret"])
        assert verify_signature(body, header, OPERATOR_SECRET)  # for the grace period

        latest = await tenants.rotate("operator", grace_seconds=0)
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            await webhook.send(message(receiver.url, DEFAULT_TENANT, delivery_id="later"))
    body, header = signed(receiver)
    assert header.count("v1=") == 1
    assert verify_signature(body, header, latest["webhook_secret"])
    assert (await tenants.show("operator"))["created_at"] is not None
