"""notifications: the user and collapse-key indexes hold only the rows that have one

Most notifications name no collapse key, and those to an inline recipient no user: their
entries in these indexes were never looked up (a look-up names a key or a user) but cost a
B-tree insert each for every notification stored.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Each index, its columns, and the column a row must have a value in to be in it.
_PARTIAL = {
    "ix_notifications_collapse_key": (["collapse_key"], "collapse_key"),
    "ix_notifications_tenant_id_user_id_id": (["tenant_id", "user_id", "id"], "user_id"),
}


def upgrade() -> None:
    for name, (columns, present) in _PARTIAL.items():
        op.drop_index(name, table_name="notifications")
        where = sa.text(f"{present} IS NOT NULL")
        op.create_index(name, "notifications", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, (columns, _) in _PARTIAL.items():
        op.drop_index(name, table_name="notifications")
        op.create_index(name, "notifications", columns)
