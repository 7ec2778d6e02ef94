"""One tenant's dead destinations never hold back another tenant's deliveries.

Tenant A sends to destinations that keep failing (a webhook URL on a closed port; email to a
domain whose server defers every recipient with 450). Their circuits open for A and those
destinations only: A's later deliveries are put off without attempts, while tenant B's
webhook and email, sent meanwhile, go out at their first attempt. The circuits' reset time
is far longer than the test may take, so a shared circuit would hold B's deliveries back
until the test timed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald.api.app import create_app
from herald.clock import utcnow
from herald.store import api_keys
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.pipeline_harness import Pipeline, PipelineFactory
from tests.services import free_port

URL = "/api/v1/notifications"
DEAD_DOMAIN = "deferring.example"
SETTINGS: dict[str, Any] = {
    "circuit_failure_threshold": 2,
    "circuit_reset_seconds": 600,
    "circuit_max_reset_seconds": 600,
    "retry_max_attempts": 5,
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.1,
}


@pytest.fixture
def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()  # trusts tenant B's secret, once B has it
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


async def _tenant_client(p: Pipeline, tenant: str) -> httpx.AsyncClient:
    async with p.runtime.db.write() as conn:
        _, secret = await api_keys.create(conn, tenant, "test", ["admin"], now=utcnow())
    transport = httpx.ASGITransport(app=create_app(p.runtime, open_access=False))
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://localhost",
        headers={"Authorization": f"Bearer {secret}"},
    )


async def _post(http: httpx.AsyncClient, **body: Any) -> str:
    response = await http.post(URL, json={"subject": "Hi", "message": "hello", **body})
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


async def _until(http: httpx.AsyncClient, notification_id: str, statuses: set[str]) -> Any:
    for _ in range(600):
        body = (await http.get(f"{URL}/{notification_id}")).json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {statuses}: {body}")


async def _deferred_by_circuit(http: httpx.AsyncClient, ids: list[str]) -> int:
    count = 0
    for notification_id in ids:
        steps = (await http.get(f"{URL}/{notification_id}/timeline")).json()["steps"]
        count += any(s["step"] == "deferred" and "circuit" in (s["detail"] or "") for s in steps)
    return count


async def _until_deferred(http: httpx.AsyncClient, ids: list[str]) -> int:
    """How many of ``ids`` an open circuit put off, once any was: each is put off when its
    retry comes due (50-100 ms after its failure here), which may be after B's email left."""
    for _ in range(200):
        if count := await _deferred_by_circuit(http, ids):
            return count
        await asyncio.sleep(0.05)
    return 0


async def _until_failed_often(http: httpx.AsyncClient, ids: list[str], times: int) -> None:
    """Until A's deliveries failed ``times`` times in all: enough to open a circuit."""
    for _ in range(400):
        views = [(await http.get(f"{URL}/{i}")).json() for i in ids]
        if sum(v["deliveries"][0]["attempts"] for v in views) >= times:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("A's deliveries did not fail that often")


async def test_a_tenants_dead_webhook_host_does_not_delay_another_tenants_webhook(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with start_pipeline(channels=("email", "webhook"), **SETTINGS) as p:
        a, b = await _tenant_client(p, "tenant-a"), await _tenant_client(p, "tenant-b")
        async with a, b:
            # Inline webhooks are signed with the sending tenant's secret.
            rotated = await b.post("/api/v1/webhook-secret/rotate")
            receiver.secrets.append(rotated.json()["webhook_secret"])
            a_ids = [
                await _post(a, contacts={"webhook_url": dead}, channels=["webhook"])
                for _ in range(6)
            ]
            await _until_failed_often(a, a_ids, SETTINGS["circuit_failure_threshold"])
            b_id = await _post(b, contacts={"webhook_url": receiver.url}, channels=["webhook"])
            done = await _until(b, b_id, {"SENT", "FAILED"})
            a_views = [(await a.get(f"{URL}/{i}")).json() for i in a_ids]
            deferred = await _until_deferred(a, a_ids)

    assert done["status"] == "SENT"
    assert done["deliveries"][0]["attempts"] == 1
    assert len(receiver.verified) == 1
    # A's deliveries wait for the circuit, not burning attempts against a dead host.
    attempts = sum(v["deliveries"][0]["attempts"] for v in a_views)
    assert attempts < 6 * SETTINGS["retry_max_attempts"]
    assert all(v["status"] == "PENDING" for v in a_views)
    assert deferred > 0  # put off by the circuit of A's destination


async def test_a_tenants_deferring_mail_domain_does_not_delay_another_tenants_email(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(channels=("email",), **SETTINGS) as p:
        for i in range(6):
            p.sink.rcpt_replies[f"user{i}@{DEAD_DOMAIN}"] = "450 4.2.0 Mailbox busy, try later"
        a, b = await _tenant_client(p, "tenant-a"), await _tenant_client(p, "tenant-b")
        async with a, b:
            a_ids = [await _post(a, recipient=f"user{i}@{DEAD_DOMAIN}") for i in range(6)]
            await _until_failed_often(a, a_ids, SETTINGS["circuit_failure_threshold"])
            # The relay itself is fine: its circuit stays closed for everyone.
            b_id = await _post(b, recipient="someone@example.com")
            a_other = await _post(a, recipient="other@example.com")
            done = await _until(b, b_id, {"SENT", "FAILED"})
            a_done = await _until(a, a_other, {"SENT", "FAILED"})
            deferred = await _until_deferred(a, a_ids)

    assert done["status"] == "SENT"
    assert done["deliveries"][0]["attempts"] == 1
    assert a_done["status"] == "SENT"  # A's other domains are not held back either
    assert deferred > 0
    delivered = {m.rcpt_tos[0] for m in p.sink.messages()}
    assert delivered == {"someone@example.com", "other@example.com"}
