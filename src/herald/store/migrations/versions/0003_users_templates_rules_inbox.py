"""users, templates, rules and the in-app inbox; notification category, priority, schedule
and collapse key; each delivery's rendered content and skip reason

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_items",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("notification_id", sa.String(length=36), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("read_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_items")),
    )
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_items_user_id_id"), ["user_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbox_items_user_id_status"), ["user_id", "status"], unique=False
        )

    op.create_table(
        "rules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("condition", sa.Text(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.String(length=10), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rules")),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rules_event_type"), ["event_type"], unique=False)

    op.create_table(
        "templates",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_templates")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("push_tokens", sa.JSON(), nullable=False),
        sa.Column("web_push", sa.JSON(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("apprise_urls", sa.JSON(), nullable=False),
        sa.Column("preferences", sa.JSON(), nullable=False),
        sa.Column("webhook_secrets", sa.JSON(), nullable=False),
        sa.Column("unsubscribe_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        # Web Push subscriptions and webhook URLs do not fit 320 characters.
        batch_op.alter_column(
            "recipient", existing_type=sa.String(length=320), type_=sa.Text(), nullable=False
        )
        batch_op.add_column(sa.Column("content", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("skip_reason", sa.String(length=64), nullable=True))

    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("priority", sa.String(length=10), server_default="normal", nullable=False)
        )
        batch_op.add_column(sa.Column("template", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("event_type", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("send_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("collapse_key", sa.String(length=255), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_notifications_collapse_key"), ["collapse_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_collapse_key"))
        batch_op.drop_column("collapse_key")
        batch_op.drop_column("send_at")
        batch_op.drop_column("event_type")
        batch_op.drop_column("template")
        batch_op.drop_column("priority")
        batch_op.drop_column("category")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("skip_reason")
        batch_op.drop_column("content")
        batch_op.alter_column(
            "recipient", existing_type=sa.Text(), type_=sa.String(length=320), nullable=False
        )

    op.drop_table("users")
    op.drop_table("templates")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_event_type"))

    op.drop_table("rules")
    with op.batch_alter_table("inbox_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_items_user_id_status"))
        batch_op.drop_index(batch_op.f("ix_inbox_items_user_id_id"))

    op.drop_table("inbox_items")
