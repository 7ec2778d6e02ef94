"""Herald's roles, each an async function that runs until its stop event is set."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from herald.api.app import create_app
from herald.api.server import bind, serve
from herald.bus.base import Message
from herald.channels import build_provider
from herald.pipeline.maintenance import Maintenance
from herald.pipeline.relay import OutboxRelay
from herald.pipeline.router import Router
from herald.pipeline.runner import ConsumerRunner
from herald.pipeline.status import StatusUpdater
from herald.pipeline.worker import ChannelWorker
from herald.reliability.backoff import Backoff
from herald.reliability.retry import RetryPolicy
from herald.runtime import CHANNELS, Runtime
from herald.store.outbox import NOTIFY_CHANNEL

Role = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def api(rt: Runtime, host: str, port: int) -> Role:
    sock = bind(host, port)  # now, so a taken port fails before anything else starts

    async def run(stop: asyncio.Event) -> None:
        await serve(create_app(rt), sock, stop, rt.settings.shutdown_timeout_seconds)

    return run


def relay(rt: Runtime) -> Role:
    s = rt.settings
    outbox_relay = OutboxRelay(
        rt.db,
        rt.bus,
        rt.outbox_wakeup,
        batch_size=s.relay_batch_size,
        poll_interval=s.poll_interval_seconds,
        max_attempts=s.relay_max_attempts,
        shard_lease_seconds=s.relay_shard_lease_seconds,
    )
    if rt.db.is_sqlite:
        return outbox_relay.run

    from herald.store.listen import PostgresListener

    listener = PostgresListener(rt.db, NOTIFY_CHANNEL, rt.outbox_wakeup)

    async def run(stop: asyncio.Event) -> None:
        await asyncio.gather(outbox_relay.run(stop), listener.run(stop))

    return run


def _consumer(
    rt: Runtime, name: str, topics: list[str], handler: Callable[[Message], Awaitable[None]]
) -> Role:
    async def run(stop: asyncio.Event) -> None:
        runner = ConsumerRunner(
            rt.bus.consumer(f"{rt.topics.prefix}{name}", topics),
            handler,
            name=name,
            max_in_flight=rt.settings.worker_max_in_flight,
            drain_timeout=rt.settings.shutdown_timeout_seconds,
        )
        await runner.run(stop)

    return run


def router(rt: Runtime) -> Role:
    return _consumer(
        rt, "router", [rt.topics.requested], Router(rt.db, rt.topics, rt.outbox_wakeup).handle
    )


def status(rt: Runtime) -> Role:
    return _consumer(rt, "status", [rt.topics.status], StatusUpdater(rt.db).handle)


def channel_worker(rt: Runtime, channel: str) -> Role:
    s = rt.settings
    provider = build_provider(channel, s)
    worker = ChannelWorker(
        rt.db,
        rt.topics,
        provider,
        RetryPolicy(s.retry_max_attempts, Backoff(s.retry_base_seconds, s.retry_max_seconds)),
        rt.outbox_wakeup,
        lease_seconds=s.delivery_lease_seconds,
    )
    consume = _consumer(rt, f"worker.{channel}", [rt.topics.deliveries(channel)], worker.handle)

    async def run(stop: asyncio.Event) -> None:
        await provider.start()
        try:
            await consume(stop)
        finally:
            await provider.close()

    return run


def maintenance(rt: Runtime) -> Role:
    s = rt.settings
    return Maintenance(
        rt.db,
        rt.bus,
        interval=s.maintenance_interval_seconds,
        outbox_retention=s.outbox_retention_seconds,
        log_retention=s.log_retention_seconds,
    ).run


def relay_roles(rt: Runtime) -> dict[str, Role]:
    """`herald relay`: the outbox relay, and the housekeeping that goes with the outbox."""
    return {"relay": relay(rt), "maintenance": maintenance(rt)}


def worker_roles(rt: Runtime, channels: list[str]) -> dict[str, Role]:
    """`herald worker`: router, status consumer and a worker per channel."""
    roles = {"router": router(rt), "status": status(rt)}
    for channel in channels:
        roles[f"worker.{channel}"] = channel_worker(rt, channel)
    return roles


def all_roles(rt: Runtime, host: str, port: int) -> dict[str, Role]:
    """Everything in one process: what `herald serve` runs."""
    return {"api": api(rt, host, port), **relay_roles(rt), **worker_roles(rt, CHANNELS)}
