"""What one Herald process shares between its roles: settings, database, bus, intake."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from herald.bus import build_bus
from herald.bus.topics import Topics
from herald.channels import (
    Dependencies,
    available_channels,
    build_provider,
    providers_for,
    unavailable_channels,
)
from herald.channels.base import OutboundMessage, Provider
from herald.clock import utcnow
from herald.config import Settings
from herald.domain.models import Channel
from herald.errors import ConfigError
from herald.observability.logging import get_logger
from herald.pipeline.deadletter import DeadLetterOffice
from herald.pipeline.operations.replay import Replayer
from herald.pipeline.planning import Planner
from herald.pipeline.stages.intake import Intake
from herald.pipeline.stages.receipts import Receipts
from herald.pipeline.stall import StallWatch
from herald.pipeline.status_changes import StatusChanges
from herald.pipeline.status_webhooks import Announcer, Subscriptions
from herald.pipeline.unit import Units
from herald.pipeline.unsubscribe_links import UnsubscribeLinks
from herald.reliability.ratelimit import (
    LocalPacer,
    LocalTokenBucket,
    RateLimiter,
    RedisTokenBucket,
    SendThrottle,
    Throttle,
    paced_rate,
)
from herald.store import tenant_secrets, users
from herald.store.database import Database
from herald.store.idempotency_cache import IdempotencyCache
from herald.store.migrate import require_current, upgrade
from herald.store.server_secrets import UNSUBSCRIBE_KEY, ServerSecret
from herald.tenancy import DEFAULT_TENANT
from herald.wakeup import Wakeup

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)

CHANNELS: list[str] = [c.value for c in Channel]


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            sqlite_cache_mb=settings.sqlite_cache_mb,
            pool_size=settings.db_pool_size,
        )
        self.topics = Topics(settings.topic_prefix)
        self.bus = build_bus(settings, self.db)
        # Lets the relay start at once when this process wrote to the outbox.
        self.outbox_wakeup = Wakeup()
        # Wakes in-app inbox streams of a user (topic = user id) when this process adds an item.
        self.inbox_wakeup = Wakeup()
        self.redis = _redis(settings)
        self.rate_limiter = _rate_limiter(settings, self.redis)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        # Whether this process's consumers are stuck (readiness, herald_consumer_stalled).
        self.stall_watch = StallWatch(settings.consumer_stall_seconds)
        # `herald serve` with its consumers in a second process: that process's /metrics and
        # /readyz, which this one's include.
        self.consumer_process_url: str | None = None
        # Every stage writes through units of work: what it publishes commits with it.
        self.units = Units(self.db, self.outbox_wakeup, bus=self.bus)
        # Status events for tenants' webhook subscriptions, made by every unit that changes
        # a delivery (pipeline/status_webhooks).
        self.subscriptions = Subscriptions()
        self.announcer = Announcer(self.topics, self.subscriptions)
        self.units.announce = self.announcer.announce
        self.dead_letters = DeadLetterOffice(self.units, self.topics)
        # What follows a delivery's status change, wherever it is made.
        self.status_changes = StatusChanges(self.topics, publish=settings.status_events)
        # Providers' receipts (delivered, bounced, ...), taken by their endpoints.
        self.receipts = Receipts(self.units, self.status_changes, spawn=self.spawn)
        self.replayer = Replayer(
            self.units,
            self.topics,
            per_second=settings.dlq_replay_per_second,
            status_changes=self.status_changes,
        )
        self._background: set[asyncio.Task[None]] = set()
        # Signs email's one-click unsubscribe links when they are sent.
        self.unsubscribe_links = UnsubscribeLinks(
            self.db, ServerSecret(self.db, UNSUBSCRIBE_KEY), settings.public_url
        )
        # Built-in channels whose library an extra brings, left out without it.
        self.unavailable_channels = unavailable_channels(settings)
        self.intake = Intake(
            self.units,
            self.topics,
            idempotency_ttl=settings.idempotency_ttl_seconds,
            cache=None
            if self.redis is None
            else IdempotencyCache(self.redis, prefix=settings.redis_prefix),
            planner=Planner(
                channels=self.channels(),
                unavailable=self.unavailable_channels,
                critical_categories=frozenset(settings.critical_categories),
                public_url=settings.public_url,
                outbound=settings.outbound_policy(),
                unsubscribe_links=True,
            ),
            # The router counts these channels' sends per recipient and day: theirs go to it.
            capped_channels=settings.daily_caps,
            stage_from=settings.stage_batches_from,
        )

    async def start(self, *, migrate: bool, load_rules: bool = False, warn: bool = True) -> None:
        """``load_rules``: the API's processes load HERALD_RULES_FILE (only they read rules)."""
        if migrate:
            await upgrade(self.db)
        else:
            await require_current(self.db)
        if load_rules and self.settings.rules_file:
            from herald.api.rules_file import load_rules_file

            await load_rules_file(self.db, self.settings.rules_file)
        await self.bus.start()
        await self.bus.ensure_topics(self.topics.all(CHANNELS))
        for channel, why in self.unavailable_channels.items() if warn else ():
            log.warning("channel.unavailable", channel=channel, reason=why)
        log.info("runtime.started", database=self.db.dialect, bus=self.bus.name)

    def channels(self) -> list[str]:
        """The channels some provider can send on with this configuration."""
        return available_channels(self.settings)

    def providers(self, channel: str) -> list[Provider]:
        """The channel's providers in failover order."""
        deps = Dependencies(self.db, self.inbox_wakeup, self.signing_secrets)
        names = providers_for(channel, self.settings)
        if not names:
            raise ConfigError(
                f"no provider is configured for channel {channel!r}: see HERALD_PROVIDERS"
            )
        return [build_provider(name, self.settings, deps) for name in names]

    async def signing_secrets(self, message: OutboundMessage) -> list[str]:
        """Webhook signing secrets (two while one is rotated): the user's, else the tenant's
        (made the first time it is needed). Never another tenant's: a receiver that trusts
        its tenant's secret must not accept what another tenant had Herald sign."""
        if message.user_id is not None:
            async with self.db.read() as conn:
                user = await users.get(conn, message.tenant_id, message.user_id)
            if user is not None and user.webhook_secrets:
                return user.signing_secrets(utcnow())
        return await self.tenant_signing_secrets(message.tenant_id)

    async def tenant_signing_secrets(self, tenant: str) -> list[str]:
        """The tenant's webhook signing secrets (its status webhooks are signed with them)."""
        now = utcnow()
        fallback = self.webhook_secret_fallback(tenant)
        found = await tenant_secrets.current(self.db, tenant, now=now, fallback=fallback)
        return found.signing_secrets(now)

    def webhook_secret_fallback(self, tenant: str) -> str | None:
        """HERALD_WEBHOOK_SECRET signs the default (operator's) tenant's inline webhooks until
        that tenant's secret is first rotated; it is no other tenant's."""
        secret = self.settings.webhook_secret
        if tenant != DEFAULT_TENANT or secret is None:
            return None
        return secret.get_secret_value() or None

    def provider_throttle(self, provider: str) -> SendThrottle | None:
        """The provider's send rate limit: paced in this process, or shared through Redis."""
        rate = self.settings.provider_rate_limits.get(provider)
        if not rate:
            return None
        if self.redis is None:
            return LocalPacer(rate)
        # One token at most in the bucket: sends are spaced evenly, so the provider never sees
        # more than `rate` in any second, even right after an idle spell.
        limiter = RedisTokenBucket(
            self.redis,
            rate=paced_rate(rate),
            burst=1.0,
            prefix=f"{self.settings.redis_prefix}provider:",
        )
        return Throttle(limiter, provider)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """A small background write (e.g. a circuit's new state); failures are logged."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "runtime.background_failed", task=task.get_name(), error=repr(task.exception())
            )

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        await self.bus.close()
        await self.db.close()
        if self.redis is not None:
            await self.redis.aclose()


def _redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    try:
        from redis.asyncio import Redis
    except ImportError as exc:
        raise ConfigError(
            "HERALD_REDIS_URL needs the redis extra: pip install 'herald[redis]'"
        ) from exc
    # Short timeouts: Redis is an accelerator here; when it is slow, the fallbacks take over.
    return Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _rate_limiter(settings: Settings, redis: Redis | None) -> RateLimiter | None:
    if settings.rate_limit_per_second <= 0:
        return None
    rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
    if redis is None:
        return LocalTokenBucket(rate=rate, burst=burst)
    return RedisTokenBucket(redis, rate=rate, burst=burst, prefix=settings.redis_prefix)


@asynccontextmanager
async def running(
    settings: Settings, *, migrate: bool, load_rules: bool = False, warn: bool = True
) -> AsyncIterator[Runtime]:
    """``warn``: log what the configuration leaves out (not again in `herald serve`'s
    consumer process: its parent did)."""
    runtime = Runtime(settings)
    try:
        await runtime.start(migrate=migrate, load_rules=load_rules, warn=warn)
        yield runtime
    finally:
        await runtime.close()
