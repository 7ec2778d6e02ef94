"""tenants and API keys: a tenant on notifications, users, templates, rules, the inbox and
dead letters (existing rows go to the default tenant); hashed API keys; per-recipient daily
send counts

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tenant_column(primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        sa.String(length=63),
        nullable=False,
        server_default="default",
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)

    op.create_table(
        "recipient_sends",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("recipient_key", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_recipient_sends")),
    )
    op.create_index(
        "ix_recipient_sends_recipient_key_day", "recipient_sends", ["recipient_key", "day"]
    )
    op.create_index("ix_recipient_sends_day", "recipient_sends", ["day"])

    with op.batch_alter_table("notifications") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_index("ix_notifications_recipient_id")
        batch_op.drop_index("ix_notifications_user_id_id")
        batch_op.create_index("ix_notifications_tenant_id_id", ["tenant_id", "id"])
        batch_op.create_index(
            "ix_notifications_tenant_id_recipient_id", ["tenant_id", "recipient", "id"]
        )
        batch_op.create_index(
            "ix_notifications_tenant_id_user_id_id", ["tenant_id", "user_id", "id"]
        )

    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.create_index("ix_dead_letters_tenant_id_id", ["tenant_id", "id"])

    with op.batch_alter_table("inbox_items") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_index("ix_inbox_items_user_id_id")
        batch_op.drop_index("ix_inbox_items_user_id_status")
        batch_op.create_index("ix_inbox_items_tenant_id_user_id_id", ["tenant_id", "user_id", "id"])
        batch_op.create_index(
            "ix_inbox_items_tenant_id_user_id_status", ["tenant_id", "user_id", "status"]
        )

    # The tenant joins the primary key of what callers name themselves.
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_constraint("pk_users", type_="primary")
        batch_op.create_primary_key("pk_users", ["tenant_id", "id"])
        batch_op.create_unique_constraint("uq_users_unsubscribe_token", ["unsubscribe_token"])

    with op.batch_alter_table("templates") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_constraint("pk_templates", type_="primary")
        batch_op.create_primary_key("pk_templates", ["tenant_id", "name", "version"])

    with op.batch_alter_table("rules") as batch_op:
        batch_op.add_column(_tenant_column())
        batch_op.drop_index("ix_rules_event_type")
        batch_op.drop_constraint("pk_rules", type_="primary")
        batch_op.create_primary_key("pk_rules", ["tenant_id", "name"])
        batch_op.create_index("ix_rules_tenant_id_event_type", ["tenant_id", "event_type"])


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch_op:
        batch_op.drop_index("ix_rules_tenant_id_event_type")
        batch_op.drop_constraint("pk_rules", type_="primary")
        batch_op.create_primary_key("pk_rules", ["name"])
        batch_op.drop_column("tenant_id")
        batch_op.create_index("ix_rules_event_type", ["event_type"])
    with op.batch_alter_table("templates") as batch_op:
        batch_op.drop_constraint("pk_templates", type_="primary")
        batch_op.create_primary_key("pk_templates", ["name", "version"])
        batch_op.drop_column("tenant_id")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_constraint("uq_users_unsubscribe_token", type_="unique")
        batch_op.drop_constraint("pk_users", type_="primary")
        batch_op.create_primary_key("pk_users", ["id"])
        batch_op.drop_column("tenant_id")
    with op.batch_alter_table("inbox_items") as batch_op:
        batch_op.drop_index("ix_inbox_items_tenant_id_user_id_status")
        batch_op.drop_index("ix_inbox_items_tenant_id_user_id_id")
        batch_op.drop_column("tenant_id")
        batch_op.create_index("ix_inbox_items_user_id_status", ["user_id", "status"])
        batch_op.create_index("ix_inbox_items_user_id_id", ["user_id", "id"])
    with op.batch_alter_table("dead_letters") as batch_op:
        batch_op.drop_index("ix_dead_letters_tenant_id_id")
        batch_op.drop_column("tenant_id")
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_index("ix_notifications_tenant_id_user_id_id")
        batch_op.drop_index("ix_notifications_tenant_id_recipient_id")
        batch_op.drop_index("ix_notifications_tenant_id_id")
        batch_op.drop_column("tenant_id")
        batch_op.create_index("ix_notifications_user_id_id", ["user_id", "id"])
        batch_op.create_index("ix_notifications_recipient_id", ["recipient", "id"])
    op.drop_index("ix_recipient_sends_day", table_name="recipient_sends")
    op.drop_index("ix_recipient_sends_recipient_key_day", table_name="recipient_sends")
    op.drop_table("recipient_sends")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
