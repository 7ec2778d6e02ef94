"""Herald's roles, each an async function that runs until its stop event is set."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from herald.api.app import create_app, create_metrics_app
from herald.api.auth import check_auth_setting, decide_open_access
from herald.api.server import bind, serve
from herald.bus.base import Message
from herald.channels.webhook import WebhookConfig, WebhookProvider
from herald.clock import utcnow
from herald.consumer_process import ConsumerProcess, ParentLink, link_role
from herald.errors import ConfigError
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.observability.sampler import Sampler
from herald.pipeline.failover import FailoverChain, ProviderSlot, probe_when_reachable
from herald.pipeline.operations.maintenance import Maintenance
from herald.pipeline.operations.recovery import Recovery
from herald.pipeline.operations.statistics import StatisticsKeeper
from herald.pipeline.retries import RetrySchedule, RetryScheduler
from herald.pipeline.runner import BatchHandler, ConsumerRunner, one_at_a_time
from herald.pipeline.stages.announce import NAME, StatusWebhookSender
from herald.pipeline.stages.deliver import ChannelWorker
from herald.pipeline.stages.expand import Expander
from herald.pipeline.stages.relay import OutboxRelay
from herald.pipeline.stages.route import Router
from herald.pipeline.stages.status import StatusUpdater
from herald.reliability.backoff import Backoff
from herald.reliability.circuit import CircuitBreaker, CircuitState, CircuitTable
from herald.reliability.retry import RetryPolicy
from herald.runtime import Runtime
from herald.store import circuits
from herald.store.database import UNAVAILABLE_ERRORS
from herald.store.outbox import NOTIFY_CHANNEL
from herald.wakeup import came_before_stop

log = get_logger(__name__)

Role = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Handler = Callable[[Message], Awaitable[None]]

# What may stop a circuit's row (kept for GET /providers only) from being written, which must
# never stop a worker: the database out of reach, or a connection it broke off mid-statement
# (asyncpg then reports "cannot switch to state ...; another operation is in progress", an
# InternalError, on the next use of that connection).
CIRCUIT_ROW_ERRORS = (*UNAVAILABLE_ERRORS, sa.exc.DBAPIError)

# A status webhook's receiver gets as long to answer as the webhook channel's by default.
WEBHOOK_TIMEOUT_SECONDS = 10.0

# Retries waiting for their due time are cheap (a sleeping task each); hold many at once.
RETRY_SCHEDULER_IN_FLIGHT = 10_000


def api(
    rt: Runtime,
    host: str,
    port: int,
    *,
    open_by_default: bool = False,
    after: asyncio.Event | None = None,
) -> Role:
    """``open_by_default``: `herald serve` on loopback needs no key until one is created.
    ``after``: serve only once this is set (the consumer process is up)."""
    check_auth_setting(rt.settings.auth, host)
    sock = bind(host, port)  # now, so a taken port fails before anything else starts

    async def run(stop: asyncio.Event) -> None:
        if after is not None and not await came_before_stop(after, stop):
            return
        open_access = await decide_open_access(
            rt.settings.auth, host, rt.db, open_by_default=open_by_default
        )
        # Opened by default (no HERALD_AUTH): closed again the moment a key exists.
        until_first_key = open_access and rt.settings.auth is None
        app = create_app(rt, open_access=open_access, until_first_key=until_first_key)
        await serve(app, sock, stop, rt.settings.shutdown_timeout_seconds)

    return run


def relay(rt: Runtime) -> Role:
    s = rt.settings
    metrics.zero_relay()
    outbox_relay = OutboxRelay(
        rt.db,
        rt.bus,
        rt.outbox_wakeup,
        batch_size=s.relay_batch_size,
        linger=s.relay_linger_seconds,
        linger_max=s.relay_linger_max_seconds,
        poll_interval=s.poll_interval_seconds,
        max_attempts=s.relay_max_attempts,
        dead_letters=rt.dead_letters,
        shard_lease_seconds=s.relay_shard_lease_seconds,
        keep_published=s.outbox_retention_seconds > 0,
    )
    if rt.db.is_sqlite:
        return outbox_relay.run

    from herald.store.listen import PostgresListener

    listener = PostgresListener(rt.db, NOTIFY_CHANNEL, rt.outbox_wakeup)

    async def run(stop: asyncio.Event) -> None:
        await asyncio.gather(outbox_relay.run(stop), listener.run(stop))

    return run


def expander(rt: Runtime) -> Role:
    """Writes out staged batches (herald.pipeline.stages.expand), woken as the relay is."""
    return Expander(
        rt.units,
        rt.intake,
        rt.outbox_wakeup,
        bus=rt.bus,
        groups=rt.topics.consumer_groups(rt.channels(), retry=rt.bus.name == "kafka"),
        ahead=rt.settings.expand_ahead,
        poll_interval=rt.settings.poll_interval_seconds,
    ).run


def _group(rt: Runtime, name: str) -> str:
    return rt.topics.group(name)


def _consumer(
    rt: Runtime,
    name: str,
    topics: list[str],
    handler: Callable[[asyncio.Event], BatchHandler],
    *,
    one_by_one: bool = False,
    max_in_flight: int | None = None,
) -> Role:
    """A consumer group `<prefix><name>` on ``topics``; ``handler`` gets the stop event.

    A stage takes batches (HERALD_BATCH_SIZE, one message per key each, HERALD_BATCH_LINGER_MS,
    HERALD_STAGE_CONCURRENCY at once) and readiness watches that its commits move. One that
    holds messages back on purpose (the retry scheduler) takes them ``one_by_one``, a task
    per key, and is not watched."""
    s = rt.settings

    async def run(stop: asyncio.Event) -> None:
        runner = ConsumerRunner(
            rt.bus.consumer(_group(rt, name), topics),
            handler(stop),
            name=_group(rt, name),
            max_in_flight=max_in_flight or s.worker_max_in_flight,
            batch_size=1 if one_by_one else s.batch_size,
            linger=0.0 if one_by_one else s.batch_linger_ms / 1000,
            concurrency=None if one_by_one else s.stage_concurrency,
            drain_timeout=s.shutdown_timeout_seconds,
            stall_watch=None if one_by_one else rt.stall_watch,
        )
        await runner.run(stop)

    return run


def router(rt: Runtime) -> Role:
    handle = Router(
        rt.units,
        rt.topics,
        rt.dead_letters,
        retries=RetrySchedule(rt.topics, retry_topic=rt.bus.name == "kafka"),
        critical_categories=rt.settings.critical_categories,
        daily_caps=rt.settings.daily_caps,
        status_changes=rt.status_changes,
    ).handle
    return _consumer(rt, "router", [rt.topics.requested], lambda _stop: handle)


def status(rt: Runtime) -> Role:
    handle = StatusUpdater(rt.dead_letters).handle
    return _consumer(rt, "status", [rt.topics.status], lambda _stop: handle)


def status_webhook_sender(rt: Runtime) -> Role:
    """Posts status events to tenants' webhook subscriptions (pipeline/stages/announce)."""
    s = rt.settings
    lease = s.delivery_lease_seconds
    # The webhook channel's signing and guarded client; its own name, timeout and retries.
    # A connection for every post of the batches under way: none waits for another's (a
    # tenant's slow receiver would otherwise use up the time of other tenants' posts).
    config = WebhookConfig(
        timeout_seconds=min(WEBHOOK_TIMEOUT_SECONDS, lease * 0.8),
        concurrency=s.batch_size * s.stage_concurrency,
    )
    poster = WebhookProvider(NAME, config, rt.signing_secrets, outbound=s.outbound_policy())
    max_attempts, base, cap = s.retry_policy_for(NAME)
    sender = StatusWebhookSender(
        rt.units,
        rt.announcer,
        poster,
        rt.tenant_signing_secrets,
        RetryPolicy(max_attempts, Backoff(base, cap)),
        lease_seconds=lease,
        dead_letters=rt.dead_letters,
        destinations=CircuitTable(lambda key: _destination_breaker(rt, NAME, key)),
    )
    consume = _consumer(rt, NAME, [rt.topics.status_webhooks], lambda _stop: sender.handle)

    async def run(stop: asyncio.Event) -> None:
        await poster.start()
        try:
            await consume(stop)
        finally:
            await poster.close()

    return run


def retry_scheduler(rt: Runtime) -> Role:
    """Kafka only: holds jobs on deliveries.retry until due, then sends them back."""
    return _consumer(
        rt,
        "retry",
        [rt.topics.retry],
        lambda stop: one_at_a_time(RetryScheduler(rt.bus, rt.dead_letters, stop).handle),
        one_by_one=True,
        max_in_flight=RETRY_SCHEDULER_IN_FLIGHT,
    )


def channel_worker(rt: Runtime, channel: str) -> Role:
    s = rt.settings
    chain = FailoverChain(
        [
            ProviderSlot(
                provider, _breaker(rt, channel, provider.name), rt.provider_throttle(provider.name)
            )
            for provider in rt.providers(channel)
        ]
    )
    metrics.zero_channel(channel, [slot.name for slot in chain.slots])
    watchers: set[asyncio.Task[None]] = set()
    for slot in chain.slots:
        slot.breaker.on_change = _and_watch_reachable(slot, slot.breaker.on_change, watchers)
    max_attempts, base, cap = s.retry_policy_for(channel)
    worker = ChannelWorker(
        rt.units,
        rt.topics,
        chain,
        RetryPolicy(max_attempts, Backoff(base, cap)),
        lease_seconds=s.delivery_lease_seconds,
        dead_letters=rt.dead_letters,
        retries=RetrySchedule(rt.topics, retry_topic=rt.bus.name == "kafka"),
        owner=f"{rt.worker_id}:{channel}",
        destinations=CircuitTable(lambda key: _destination_breaker(rt, channel, key)),
        unsubscribe_links=rt.unsubscribe_links,
        status_changes=rt.status_changes,
    )
    consume = _consumer(
        rt, f"worker.{channel}", [rt.topics.deliveries(channel)], lambda _stop: worker.handle
    )

    async def run(stop: asyncio.Event) -> None:
        started = []
        try:
            for slot in chain.slots:
                await slot.provider.start()
                started.append(slot.provider)
                _show_circuit(channel, slot.breaker)
                await _save_circuit(rt, slot.breaker, channel)
            await consume(stop)
        finally:
            for watcher in watchers:
                watcher.cancel()
            for provider in started:
                await provider.close()
            try:
                async with rt.db.write() as conn:
                    await circuits.forget_worker(conn, rt.worker_id)
            except CIRCUIT_ROW_ERRORS as exc:  # stopping anyway: its rows stay, as after a crash
                log.warning("circuit.forget_failed", error=f"{type(exc).__name__}: {exc}")

    return run


def _breaker(rt: Runtime, channel: str, provider: str) -> CircuitBreaker:
    s = rt.settings

    def record(breaker: CircuitBreaker) -> None:
        _show_circuit(channel, breaker)
        rt.spawn(_save_circuit(rt, breaker, channel), name=f"circuit:{breaker.name}")

    return CircuitBreaker(
        provider,
        failure_threshold=s.circuit_failure_threshold,
        reset_timeout=s.circuit_reset_seconds,
        max_reset_timeout=s.circuit_max_reset_seconds,
        on_change=record,
    )


def _and_watch_reachable(
    slot: ProviderSlot,
    record: Callable[[CircuitBreaker], None] | None,
    watchers: set[asyncio.Task[None]],
) -> Callable[[CircuitBreaker], None]:
    """``record``, and when the circuit opens, a look every few seconds for the provider being
    back (failover.probe_when_reachable), ended with the role."""

    def changed(breaker: CircuitBreaker) -> None:
        if record is not None:
            record(breaker)
        if breaker.state == CircuitState.OPEN:
            task = asyncio.create_task(probe_when_reachable(slot), name=f"reachable:{slot.name}")
            watchers.add(task)
            task.add_done_callback(watchers.discard)

    return changed


def _destination_breaker(rt: Runtime, channel: str, key: str) -> CircuitBreaker:
    """A caller-chosen destination's circuit (per tenant): logged, never stored or exported
    per destination (its keys are the callers' to choose)."""
    s = rt.settings
    return CircuitBreaker(
        f"{channel} {key}",
        failure_threshold=s.circuit_failure_threshold,
        reset_timeout=s.circuit_reset_seconds,
        max_reset_timeout=s.circuit_max_reset_seconds,
    )


def _show_circuit(channel: str, breaker: CircuitBreaker) -> None:
    metrics.circuit_state.labels(channel, breaker.name).set(metrics.CIRCUIT_STATES[breaker.state])


async def _save_circuit(rt: Runtime, breaker: CircuitBreaker, channel: str) -> None:
    opened = None if breaker.opened_at is None else datetime.fromtimestamp(breaker.opened_at, UTC)
    record = circuits.CircuitRecord(
        provider=breaker.name,
        worker=rt.worker_id,
        channel=channel,
        state=breaker.state,
        consecutive_failures=breaker.consecutive_failures,
        opened_at=opened,
        updated_at=utcnow(),
    )
    try:
        async with rt.db.write() as conn:
            await circuits.save(conn, record)
    except CIRCUIT_ROW_ERRORS as exc:
        # The row only informs GET /providers: a database that is down (the worker starting
        # during an outage) must not stop the worker. The next change writes it again.
        log.warning(
            "circuit.save_failed", provider=breaker.name, error=f"{type(exc).__name__}: {exc}"
        )


def maintenance(rt: Runtime) -> Role:
    s = rt.settings
    return Maintenance(
        rt.db,
        rt.bus,
        interval=s.maintenance_interval_seconds,
        outbox_retention=s.outbox_retention_seconds,
        log_retention=s.log_retention_seconds,
        status_event_retention=s.status_event_retention_seconds,
        recovery=Recovery(rt.units, rt.topics, stuck_after=s.recovery_after_seconds),
        receipts=rt.receipts,
    ).run


def housekeeping(rt: Runtime) -> dict[str, Role]:
    """Maintenance, and on PostgreSQL the planner's statistics of young tables kept fresh."""
    roles = {"maintenance": maintenance(rt)}
    if not rt.db.is_sqlite:
        roles["statistics"] = StatisticsKeeper(rt.db).run
    return roles


def sampler(rt: Runtime, *, stored_state: bool, channels: list[str]) -> Role:
    """Keeps the gauges of stored state current, and the lag of the groups that a worker
    serving ``channels`` consumes (none for the relay, which consumes nothing)."""
    groups: dict[str, list[str]] = {}
    if channels:
        groups = rt.topics.consumer_groups(channels, retry=rt.bus.name == "kafka")
    interval = rt.settings.metrics_sample_seconds
    return Sampler(
        rt.db,
        rt.bus,
        interval=interval,
        stored_state=stored_state,
        groups=groups,
        stall_watch=rt.stall_watch,
        worker=rt.worker_id if channels else None,
    ).run


def metrics_endpoint(rt: Runtime, sock: socket.socket | None = None) -> dict[str, Role]:
    """/metrics (and the health probes) for a process without the API, if a port is set (or
    on ``sock``, the one `herald serve` opened for its consumer process)."""
    s = rt.settings
    if sock is None:
        if s.metrics_port is None:
            return {}
        sock = bind(s.metrics_host, s.metrics_port)

    async def run(stop: asyncio.Event) -> None:
        await serve(create_metrics_app(rt), sock, stop, s.shutdown_timeout_seconds)

    return {"metrics": run}


def relay_roles(rt: Runtime) -> dict[str, Role]:
    """`herald relay`: the outbox relay, and the housekeeping that goes with the outbox."""
    return {
        "relay": relay(rt),
        "expander": expander(rt),
        **housekeeping(rt),
        "sampler": sampler(rt, stored_state=True, channels=[]),
        **metrics_endpoint(rt),
    }


def inbound_roles(rt: Runtime) -> dict[str, Role]:
    """`herald inbound`: the SMTP listener taking bounces for HERALD_BOUNCE_DOMAIN."""
    from herald.inbound import serve_inbound  # aiosmtpd: the inbound extra

    s = rt.settings
    if s.bounce_domain is None:
        raise ConfigError("herald inbound needs HERALD_BOUNCE_DOMAIN")
    domain = s.bounce_domain

    async def run(stop: asyncio.Event) -> None:
        await serve_inbound(
            rt.receipts,
            domain=domain,
            host=s.inbound_host,
            port=s.inbound_port,
            max_bytes=s.inbound_max_bytes,
            stop=stop,
        )

    return {"inbound": run, **metrics_endpoint(rt)}


def _consumers(rt: Runtime, channels: list[str]) -> dict[str, Role]:
    metrics.zero_consumers(rt.channels())  # the router routes to every configured channel
    roles = {"router": router(rt), "status": status(rt), NAME: status_webhook_sender(rt)}
    if rt.bus.name == "kafka":
        roles["retry"] = retry_scheduler(rt)
    for channel in channels:
        roles[f"worker.{channel}"] = channel_worker(rt, channel)
    return roles


def worker_roles(
    rt: Runtime, channels: list[str], parent: ParentLink | None = None
) -> dict[str, Role]:
    """`herald worker`: router, status consumer, a worker per channel (and retries on Kafka).
    ``parent``: started by `herald serve` as its consumer process."""
    roles = {
        **_consumers(rt, channels),
        "sampler": sampler(rt, stored_state=False, channels=channels),
    }
    if parent is None:
        return {**roles, **metrics_endpoint(rt)}
    probe = socket.socket(fileno=parent.probe_fd)
    # `herald serve`'s staged batches are written out here, on the consumers' core.
    linked = {"link": link_role(rt, parent.link_fd), "expander": expander(rt)}
    return {**roles, **linked, **metrics_endpoint(rt, probe)}


def all_roles(rt: Runtime, host: str, port: int, *, consumer_process: bool) -> dict[str, Role]:
    """What `herald serve` runs: everything in one process, or (``consumer_process``) the
    consumers in a second one it starts (herald.consumer_process). The API serves /metrics."""
    roles = {"relay": relay(rt), **housekeeping(rt)}
    if consumer_process:
        # A provider's bad setting stops the start here, as it does in one process.
        for channel in rt.channels():
            rt.providers(channel)
        child = ConsumerProcess(rt)
        rt.consumer_process_url = child.url
        return {
            "api": api(rt, host, port, open_by_default=True, after=child.up),
            **roles,
            "consumers": child.run,
            "sampler": sampler(rt, stored_state=True, channels=[]),
        }
    return {
        "api": api(rt, host, port, open_by_default=True),
        **roles,
        "expander": expander(rt),
        **_consumers(rt, rt.channels()),
        "sampler": sampler(rt, stored_state=True, channels=rt.channels()),
    }
