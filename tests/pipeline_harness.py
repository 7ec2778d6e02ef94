"""The pipeline in one event loop (API client, relay, router, worker, status, retries, housekeeping)
over real databases, buses and an SMTP server, for tests that need all of it running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from herald import roles
from herald.api.app import create_app
from herald.bus.base import Consumer
from herald.runtime import Runtime
from herald.store import deadletters
from herald.store.deadletters import DeadLetter
from herald.store.tables import bus_messages, outbox_events
from tests.conftest import kafka_settings, settings_for
from tests.kafka_broker import TansuBroker
from tests.smtp_sink import SmtpSink

URL = "/api/v1/notifications"
SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}

# Fast retries and leases, so that tests about them take a moment, not minutes.
FAST = {
    "retry_base_seconds": 0.05,
    "retry_max_seconds": 0.2,
    "retry_max_attempts": 3,
    "delivery_lease_seconds": 3.0,  # a send gets 2.4 s: room for a loaded CI machine
    "smtp_timeout_seconds": 2.0,
    "maintenance_interval_seconds": 3600,
}


@dataclass
class Pipeline:
    runtime: Runtime
    sink: SmtpSink
    http: httpx.AsyncClient

    async def send(self, **changes: Any) -> dict[str, Any]:
        response = await self.http.post(URL, json={**SEED, **changes})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, notification_id: str) -> dict[str, Any]:
        body: dict[str, Any] = (await self.http.get(f"{URL}/{notification_id}")).json()
        return body

    async def wait_for_delivery(
        self, notification_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body = await self.get(notification_id)
            if condition(body["deliveries"][0]):
                return body
            assert asyncio.get_running_loop().time() < deadline, f"never happened: {body}"
            await asyncio.sleep(0.01)

    async def wait_until_done(self, notification_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body = await self.get(notification_id)
            if body["status"] != "PENDING":
                return body
            assert asyncio.get_running_loop().time() < deadline, f"still PENDING: {body}"
            await asyncio.sleep(0.02)

    async def published(self) -> list[tuple[str, dict[str, str]]]:
        """(topic, headers) of every message the stages published: on the embedded bus they
        appended to the log in their own transactions; with Kafka they went through the
        outbox (kept for this: see start_pipeline), and this also checks that the relay
        published every one of them."""
        return [(topic, headers) for topic, headers, _ in await self._published()]

    async def published_values(self) -> list[tuple[str, bytes]]:
        """(topic, value) of every message the stages published (see published)."""
        return [(topic, value) for topic, _, value in await self._published()]

    async def _published(self) -> list[tuple[str, dict[str, str], bytes]]:
        if self.runtime.bus.transactional:
            async with self.runtime.db.read() as conn:
                b = bus_messages.c
                rows = await conn.execute(sa.select(b.topic, b.headers, b.value))
                return [(r.topic, r.headers, r.value) for r in rows]
        # A notification is done in the transaction that queued its last events: the relay
        # publishes them a moment later.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with self.runtime.db.read() as conn:
                o = outbox_events.c
                query = sa.select(o.topic, o.headers, o.payload, o.status)
                found = (await conn.execute(query)).all()
            if {r.status for r in found} <= {"PUBLISHED"}:
                return [(r.topic, r.headers, r.payload) for r in found]
            assert asyncio.get_running_loop().time() < deadline, "the relay left events behind"
            await asyncio.sleep(0.05)

    async def dead_letters(self, **filters: Any) -> list[DeadLetter]:
        async with self.runtime.db.read() as conn:
            return await deadletters.list_page(
                conn, deadletters.Filters(**{"status": None, **filters}), limit=1000
            )


PipelineFactory = Callable[..., AbstractAsyncContextManager[Pipeline]]


@pytest.fixture(
    params=[
        "embedded-sqlite",
        pytest.param("embedded-postgres", marks=pytest.mark.postgres),
        pytest.param("kafka-postgres", marks=[pytest.mark.kafka, pytest.mark.postgres]),
    ]
)
def start_pipeline(request: pytest.FixtureRequest, smtp_sink: SmtpSink) -> PipelineFactory:
    """Each setup in turn; call it with setting overrides to get a running pipeline."""
    bus, database = request.param.split("-")
    url = request.getfixturevalue("fresh_sqlite_url" if database == "sqlite" else "fresh_pg_url")
    base: dict[str, Any] = {"smtp_url": smtp_sink.url, **FAST}
    if bus == "kafka":
        broker: TansuBroker = request.getfixturevalue("kafka_broker")
        base |= kafka_settings(broker.bootstrap, request.getfixturevalue("topic_prefix"))
        # Published outbox rows kept (marked), for Pipeline.published to read back.
        base["outbox_retention_seconds"] = 3600.0

    @asynccontextmanager
    async def start(
        channels: Sequence[str] = ("email",), **overrides: Any
    ) -> AsyncIterator[Pipeline]:
        rt = Runtime(settings_for(url, **{**base, **overrides}))
        await rt.start(migrate=False)
        consumers = _track_consumers(rt)
        stop = asyncio.Event()
        # What `herald relay` and `herald worker` run (the retry scheduler too, on Kafka).
        running = [
            *roles.relay_roles(rt).values(),
            *roles.worker_roles(rt, list(channels)).values(),
        ]
        tasks = [asyncio.create_task(role(stop)) for role in running]
        if bus == "kafka":
            # Joining a group takes seconds: tests that time deliveries start once every
            # stage holds its partitions (router, status, status webhooks, retries and each
            # channel's worker).
            await _until_assigned(consumers, expected=4 + len(channels), tasks=tasks)
        transport = httpx.ASGITransport(app=create_app(rt, open_access=True))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                yield Pipeline(rt, smtp_sink, http)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await rt.close()

    return start


def _track_consumers(rt: Runtime) -> list[Consumer]:
    """Every consumer the roles will create on ``rt.bus``, as they create them."""
    consumers: list[Consumer] = []
    make = rt.bus.consumer

    def tracked(group: str, topics: Sequence[str]) -> Consumer:
        consumer = make(group, topics)
        consumers.append(consumer)
        return consumer

    rt.bus.consumer = tracked  # type: ignore[method-assign]
    return consumers


async def _until_assigned(
    consumers: list[Consumer], expected: int, tasks: list[asyncio.Task[None]]
) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while len(consumers) < expected or not all(c.assignment() for c in consumers):
        failed = [t for t in tasks if t.done()]
        if failed:
            await failed[0]  # a role that died: its error, not a timeout
        assert asyncio.get_running_loop().time() < deadline, "consumers never got partitions"
        await asyncio.sleep(0.05)


@pytest.fixture
async def pipeline(start_pipeline: PipelineFactory) -> AsyncIterator[Pipeline]:
    async with start_pipeline() as running:
        yield running
