"""console_sessions: sign-ins to the operator console, each bound to an API key

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import herald.store.tables

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", herald.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_console_sessions_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    for column in ("key_id", "expires_at"):
        op.create_index(
            op.f(f"ix_console_sessions_{column}"), "console_sessions", [column], unique=False
        )


def downgrade() -> None:
    op.drop_table("console_sessions")
