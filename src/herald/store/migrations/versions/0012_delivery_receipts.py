"""delivery_receipts: what providers said about deliveries after accepting them

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_receipts",
        sa.Column("id", herald.store.tables.BigId, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("receipt_key", sa.String(length=255), nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("notification_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("suppress", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_receipts")),
        sa.UniqueConstraint(
            "provider", "receipt_key", name=op.f("uq_delivery_receipts_provider_receipt_key")
        ),
    )
    op.create_index("ix_delivery_receipts_delivery_id", "delivery_receipts", ["delivery_id"])
    present = sa.text("notification_id IS NOT NULL")
    op.create_index(
        "ix_delivery_receipts_notification_id",
        "delivery_receipts",
        ["notification_id"],
        sqlite_where=present,
        postgresql_where=present,
    )
    early = sa.text("outcome = 'early'")
    op.create_index(
        "ix_delivery_receipts_early",
        "delivery_receipts",
        ["id"],
        sqlite_where=early,
        postgresql_where=early,
    )


def downgrade() -> None:
    op.drop_table("delivery_receipts")
