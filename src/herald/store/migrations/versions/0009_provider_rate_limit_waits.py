"""provider_circuits: each worker's rate-limit waits per provider, for the console

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provider_circuits") as batch:
        batch.add_column(
            sa.Column("rate_limit_waits", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("rate_limit_wait_seconds", sa.Float(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_circuits") as batch:
        batch.drop_column("rate_limit_wait_seconds")
        batch.drop_column("rate_limit_waits")
