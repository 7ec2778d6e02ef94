"""notifications: the user and collapse-key indexes hold only the rows that have one, and the
collapse key's is the tenant's

Most notifications name no collapse key, and those to an inline recipient no user: their
entries in these indexes were never looked up (a look-up names a key or a user) but cost a
B-tree insert each for every notification stored. A collapse key is looked up with its tenant;
with the key alone in its index, SQLite (without statistics) chose the tenant's index instead
and read every notification of the tenant for each one with a collapse key.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _present(column: str) -> dict[str, Any]:
    where = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


def upgrade() -> None:
    op.drop_index("ix_notifications_collapse_key", table_name="notifications")
    op.create_index(
        "ix_notifications_tenant_id_collapse_key",
        "notifications",
        ["tenant_id", "collapse_key"],
        **_present("collapse_key"),
    )
    op.drop_index("ix_notifications_tenant_id_user_id_id", table_name="notifications")
    op.create_index(
        "ix_notifications_tenant_id_user_id_id",
        "notifications",
        ["tenant_id", "user_id", "id"],
        **_present("user_id"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_tenant_id_collapse_key", table_name="notifications")
    op.create_index("ix_notifications_collapse_key", "notifications", ["collapse_key"])
    op.drop_index("ix_notifications_tenant_id_user_id_id", table_name="notifications")
    op.create_index(
        "ix_notifications_tenant_id_user_id_id", "notifications", ["tenant_id", "user_id", "id"]
    )
