"""tenant_webhook_secrets: each tenant's signing secrets for webhooks to inline URLs

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_webhook_secrets",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_webhook_secrets")),
    )


def downgrade() -> None:
    op.drop_table("tenant_webhook_secrets")
