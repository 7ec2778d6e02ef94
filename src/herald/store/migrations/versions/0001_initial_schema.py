"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 21:38:32.204596
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bus_group_leases",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("lease_until", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_bus_group_leases")),
    )
    op.create_table(
        "bus_group_offsets",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("committed_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name=op.f("pk_bus_group_offsets")
        ),
    )
    op.create_table(
        "bus_messages",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "offset", name=op.f("pk_bus_messages")),
    )
    with op.batch_alter_table("bus_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bus_messages_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "bus_partitions",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_bus_partitions")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("error_class", sa.String(length=100), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("notification_id", sa.String(length=36), nullable=True),
        sa.Column("delivery_id", sa.String(length=36), nullable=True),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=300), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "first_failed_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("last_failed_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.Column("replayed_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dead_letters_channel_id"), ["channel", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dead_letters_delivery_id"), ["delivery_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dead_letters_status_id"), ["status", "id"], unique=False
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.JSON(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notifications_recipient_id"), ["recipient", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_status_id"), ["status", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_user_id_id"), ["user_id", "id"], unique=False
        )

    op.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("available_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_events_status_available_at"),
            ["status", "available_at"],
            unique=False,
        )

    op.create_table(
        "outbox_shards",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("locked_until", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_published_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("shard", name=op.f("pk_outbox_shards")),
    )
    op.bulk_insert(
        sa.table("outbox_shards", sa.column("shard", sa.Integer)),
        [{"shard": shard} for shard in range(32)],  # herald.store.outbox.SHARDS
    )
    op.create_table(
        "provider_circuits",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "worker", name=op.f("pk_provider_circuits")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("notification_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("lease_until", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("next_attempt_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_notification_id"), ["notification_id"], unique=False
        )

    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error_class", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retry_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempts_delivery_id"), ["delivery_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_delivery_id"))

    op.drop_table("delivery_attempts")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_notification_id"))

    op.drop_table("deliveries")
    op.drop_table("provider_circuits")
    op.drop_table("outbox_shards")
    with op.batch_alter_table("outbox_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_events_status_available_at"))

    op.drop_table("outbox_events")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_user_id_id"))
        batch_op.drop_index(batch_op.f("ix_notifications_status_id"))
        batch_op.drop_index(batch_op.f("ix_notifications_recipient_id"))

    op.drop_table("notifications")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_status_id"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_delivery_id"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_channel_id"))

    op.drop_table("dead_letters")
    op.drop_table("bus_partitions")
    with op.batch_alter_table("bus_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bus_messages_created_at"))

    op.drop_table("bus_messages")
    op.drop_table("bus_group_offsets")
    op.drop_table("bus_group_leases")
