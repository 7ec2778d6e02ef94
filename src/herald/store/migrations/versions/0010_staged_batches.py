"""staged_batches: a large batch accepted as one row, expanded into its notifications later

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_id", sa.String(length=36), nullable=False),
        sa.Column("last_id", sa.String(length=36), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_try_at", herald.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staged_batches")),
        sa.UniqueConstraint("first_id", name=op.f("uq_staged_batches_first_id")),
    )
    op.create_index(
        "ix_staged_batches_tenant_id_id", "staged_batches", ["tenant_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("staged_batches")
