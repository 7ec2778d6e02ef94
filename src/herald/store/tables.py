"""SQLAlchemy Core tables. Alembic migrations must produce exactly this schema (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from herald.tenancy import DEFAULT_TENANT

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; SQLite stores them naive, PostgreSQL as timestamptz."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite's DATETIME text (SQLAlchemy's format, microseconds always) made here: chained
        # with SQLAlchemy's own processor it cost twice as much, on every timestamp written.
        # The last value's text is kept: a batch's rows share one `now` (datetimes are
        # immutable; the pair is replaced in one assignment, so threads cannot mix two).
        last: list[tuple[datetime | None, str | None]] = [(None, None)]

        def process(value: datetime | None) -> str | None:
            seen, text = last[0]
            if value is seen:
                return text
            naive = self.process_bind_param(value, dialect)
            text = None if naive is None else naive.isoformat(" ", "microseconds")
            last[0] = (value, text)
            return text

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _present(column: str) -> dict[str, Any]:
    """A partial index's options: only rows with a value in ``column``."""
    where = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(63), nullable=False, server_default=DEFAULT_TENANT),
    sa.Column("user_id", sa.String(255), nullable=True),
    sa.Column("recipient", sa.String(320), nullable=True),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("priority", sa.String(10), nullable=False, server_default="normal"),
    sa.Column("template", sa.String(100), nullable=True),
    sa.Column("event_type", sa.String(100), nullable=True),  # set when an event triggered it
    sa.Column("send_at", UTCDateTime, nullable=True),
    # A newer notification with the same key (and user) supersedes an undelivered older one.
    sa.Column("collapse_key", sa.String(255), nullable=True),
    sa.Index(None, "status", "id"),
    sa.Index(None, "tenant_id", "id"),
    sa.Index(None, "tenant_id", "recipient", "id"),
    # Only the rows that have a user or a collapse key: look-ups name one, and most rows have
    # none (an entry each was a B-tree insert per notification for nothing). The tenant leads
    # the collapse key's: with the key alone SQLite (without statistics) searched the tenant's
    # index instead, reading all its notifications for every one with a collapse key.
    sa.Index(None, "tenant_id", "user_id", "id", **_present("user_id")),
    sa.Index(None, "tenant_id", "collapse_key", **_present("collapse_key")),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "notification_id",
        sa.String(36),
        sa.ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("provider", sa.String(64), nullable=True),
    sa.Column("provider_message_id", sa.String(255), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("lease_owner", sa.String(255), nullable=True),  # the worker process holding it
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    # What this delivery sends, rendered for its channel and the user's locale; NULL for
    # rows from before templates, which send the notification's subject and body.
    sa.Column("content", sa.JSON, nullable=True),
    sa.Column("skip_reason", sa.String(64), nullable=True),
)

# One row per attempt: the status history of a delivery, with backoff spacing visible.
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.String(36),
        sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(64), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),  # a DeliveryStatus it ended in
    sa.Column("error_class", sa.String(100), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=False),
    sa.Column("retry_at", UTCDateTime, nullable=True),
)

# Steps of a notification that no other table records (published, routed, replayed, ...),
# for its timeline. No foreign key: a message naming an unknown notification must not
# wedge the consumer that journals it.
notification_events = sa.Table(
    "notification_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("notification_id", sa.String(36), nullable=False, index=True),
    sa.Column("delivery_id", sa.String(36), nullable=True),
    sa.Column("step", sa.String(30), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("channel", sa.String(32), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)

# What could not be delivered or processed, kept for inspection and replay.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # The notification's tenant; the default (operator's) tenant when none is known.
    sa.Column("tenant_id", sa.String(63), nullable=False, server_default=DEFAULT_TENANT),
    sa.Column("kind", sa.String(20), nullable=False),  # delivery | message | event
    sa.Column("status", sa.String(20), nullable=False),  # DEAD | REPLAYED
    sa.Column("reason", sa.String(20), nullable=False),  # permanent | exhausted | poison | refused
    sa.Column("error_class", sa.String(100), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("channel", sa.String(32), nullable=True),
    sa.Column("provider", sa.String(64), nullable=True),
    sa.Column("notification_id", sa.String(36), nullable=True),
    sa.Column("delivery_id", sa.String(36), nullable=True),
    sa.Column("topic", sa.String(255), nullable=False),  # where the payload goes on replay
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("source", sa.String(300), nullable=True),  # topic[partition]@offset it came from
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_failed_at", UTCDateTime, nullable=False),
    sa.Column("last_failed_at", UTCDateTime, nullable=False),
    sa.Column("replay_count", sa.Integer, nullable=False),
    sa.Column("replayed_at", UTCDateTime, nullable=True),
    sa.Index(None, "status", "id"),
    sa.Index(None, "tenant_id", "id"),
    sa.Index(None, "channel", "id"),
    sa.Index(None, "delivery_id"),
    sa.Index(None, "notification_id"),
)

# Each worker's circuit breaker per provider, so that the API can show them.
provider_circuits = sa.Table(
    "provider_circuits",
    metadata,
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("worker", sa.String(255), primary_key=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # closed | open | half_open
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Sends that waited for the provider's rate limit in this worker, and how long in all:
    # its process's counters, stored by its sampler for the console (metrics are per process).
    sa.Column("rate_limit_waits", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rate_limit_wait_seconds", sa.Float, nullable=False, server_default="0"),
)

outbox_events = sa.Table(
    "outbox_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),  # hash of the key, see outbox_shards
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("available_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("published_at", UTCDateTime, nullable=True),
    sa.Index(None, "status", "available_at"),
)

# A relay publishing to an external bus leases the shards it works on, so that one shard
# (and so one key) is only ever published by one relay at a time, in order.
outbox_shards = sa.Table(
    "outbox_shards",
    metadata,
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("last_published_at", UTCDateTime, nullable=True),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(36), nullable=False),
    sa.Column("response_status", sa.Integer, nullable=False),
    sa.Column("response_body", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# The embedded bus: a partitioned, durable log in the same database.
bus_partitions = sa.Table(
    "bus_partitions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_offset", sa.BigInteger, nullable=False, default=0),
)

bus_messages = sa.Table(
    "bus_messages",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
)

# Which process consumes a group on the embedded bus; others wait until the lease lapses.
bus_group_leases = sa.Table(
    "bus_group_leases",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("lease_until", UTCDateTime, nullable=False),
)

bus_group_offsets = sa.Table(
    "bus_group_offsets",
    metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("committed_offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# People notifications go to: contact points, locale, time zone and preferences.
users = sa.Table(
    "users",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True, server_default=DEFAULT_TENANT),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("locale", sa.String(35), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("push_tokens", sa.JSON, nullable=False),
    sa.Column("web_push", sa.JSON, nullable=False),  # browser subscriptions
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("apprise_urls", sa.JSON, nullable=False),
    sa.Column("preferences", sa.JSON, nullable=False),
    # Signing secrets, newest first, each with the time it stops being used.
    sa.Column("webhook_secrets", sa.JSON, nullable=False),
    sa.Column("unsubscribe_token", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Every version of every template is kept; notifications name a template (and version).
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True, server_default=DEFAULT_TENANT),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("channels", sa.JSON, nullable=False),  # channel -> locale -> field -> source
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# What an event triggers: channels and a template, when its condition holds.
rules = sa.Table(
    "rules",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True, server_default=DEFAULT_TENANT),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("condition", sa.Text, nullable=True),
    sa.Column("channels", sa.JSON, nullable=False),
    sa.Column("template", sa.String(100), nullable=False),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("priority", sa.String(10), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "tenant_id", "event_type"),
)

# The in-app channel's inbox: one item per in-app delivery (same id, so a resend is a no-op).
inbox_items = sa.Table(
    "inbox_items",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(63), nullable=False, server_default=DEFAULT_TENANT),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("notification_id", sa.String(36), nullable=False),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # unread | read | archived
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("read_at", UTCDateTime, nullable=True),
    sa.Index(None, "tenant_id", "user_id", "id"),
    sa.Index(None, "tenant_id", "user_id", "status"),
)

# API keys: only a hash of each is kept; the key itself is shown once, at creation.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(63), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),  # enough to recognise it in a list
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
)

# A sign-in to the operator console: its cookie holds a random token, this row the token's hash.
# Bound to the API key it was made with: revoking the key ends it (checked on every page).
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "key_id",
        sa.String(36),
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),  # every form of the session's
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# What each recipient was sent per channel and day, for the daily caps (address hashed).
recipient_sends = sa.Table(
    "recipient_sends",
    metadata,
    sa.Column("delivery_id", sa.String(36), primary_key=True),
    sa.Column("recipient_key", sa.String(64), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "recipient_key", "day"),
    sa.Index(None, "day"),
)

# Each tenant's signing secrets for webhooks to inline URLs (users have their own): newest
# first, each with the time it stops being used, as users.webhook_secrets.
tenant_webhook_secrets = sa.Table(
    "tenant_webhook_secrets",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("secrets", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
)

# Keys shared by every Herald process (e.g. the one that signs unsubscribe links), each made
# by whichever process needs it first; a per-process random key would not verify elsewhere.
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# A large batch accepted as one row (see pipeline/stages/intake.py, "Staged batches"): its
# notifications, already planned and answered for, are written out from it by the expander (or
# by a read that asks for one of them first), which deletes the row in the same transaction.
# Ids are assigned by the database as rows are inserted, so a batch staged behind another
# (after that one committed) has the larger id on any clock; a tenant's batches are expanded in
# id order. first_id..last_id bound the notification ids a batch holds (first_id unique: a
# write run again after an ambiguous commit fails instead of staging its batch twice).
staged_batches = sa.Table(
    "staged_batches",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_id", sa.String(36), nullable=False, unique=True),
    sa.Column("last_id", sa.String(36), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    # Expansions that failed (each rolled back): retried after next_try_at.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("next_try_at", UTCDateTime, nullable=True),
    sa.Index("ix_staged_batches_tenant_id_id", "tenant_id", "id"),
)

# Addresses a tenant's notifications are not sent to, per channel, put here by the API or the
# CLI (with the reason: a bounce, a complaint, ...). Routing skips them (skip_reason
# "suppressed").
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("channel", sa.String(20), primary_key=True),
    sa.Column("address", sa.String(1024), primary_key=True),  # see store/suppressions.normal
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),  # what caused it: a receipt, a note
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Every receipt a provider sent about a delivery after accepting it (delivered, bounced, ...),
# whatever became of it: applied to the delivery, only recorded (progress, a soft bounce),
# too late to apply (the delivery had moved on), early (the delivery was not recorded as sent
# yet: applied by the maintenance sweep once it is), or for no delivery Herald knows.
delivery_receipts = sa.Table(
    "delivery_receipts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(64), nullable=False),
    # The provider's identity of this one receipt: the same receipt again is one row.
    sa.Column("receipt_key", sa.String(255), nullable=False),
    sa.Column("delivery_id", sa.String(36), nullable=False),
    sa.Column("notification_id", sa.String(36), nullable=True),  # when the delivery is known
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("code", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=True),  # the provider's time, if it says
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("suppress", sa.String(32), nullable=True),  # see domain/receipts.Receipt
    sa.UniqueConstraint("provider", "receipt_key"),
    sa.Index(None, "delivery_id"),
    sa.Index(None, "notification_id", **_present("notification_id")),
    sa.Index(
        "ix_delivery_receipts_early",
        "id",
        sqlite_where=sa.text("outcome = 'early'"),
        postgresql_where=sa.text("outcome = 'early'"),
    ),
)

# A tenant's status webhooks: where to post which status events (domain/status_events).
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),  # event names, or ["*"]
    sa.Column("description", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "tenant_id", "id"),
)

# One status event for one subscription, and how its posting goes (store/webhook_events).
# Events of a subscription about one notification go out one at a time, in order: a later
# one WAITING for the one it comes ``after`` to end.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # Herald-Webhook-Id
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("subscription_id", sa.String(36), nullable=False),
    sa.Column("notification_id", sa.String(36), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # the document's data, JSON
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("after_id", sa.String(36), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "notification_id"),
    sa.Index(None, "subscription_id"),
    sa.Index(None, "after_id", **_present("after_id")),
    # The recovery sweep's: the events not ended yet (most have).
    sa.Index(
        "ix_webhook_events_open",
        "updated_at",
        sqlite_where=sa.text("status NOT IN ('SENT', 'DEAD_LETTERED')"),
        postgresql_where=sa.text("status NOT IN ('SENT', 'DEAD_LETTERED')"),
    ),
)
