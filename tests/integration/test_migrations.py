"""Alembic migrations must build exactly the schema the code's tables describe."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event

from herald.clock import utcnow
from herald.store import notifications
from herald.store.database import Database
from herald.store.migrate import current_revision, head_revision, require_current, upgrade
from herald.store.tables import metadata


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_matches_the_tables(db: Database) -> None:
    assert await current_revision(db) == head_revision()
    async with db.read() as conn:
        assert await conn.run_sync(_diff) == []


async def test_upgrade_is_idempotent(db: Database) -> None:
    await upgrade(db)
    await require_current(db)
    assert await current_revision(db) == head_revision()


async def test_the_outbox_shards_exist(db: Database) -> None:
    from herald.store.outbox import SHARDS
    from herald.store.tables import outbox_shards

    async with db.read() as conn:
        shards = (await conn.execute(sa.select(outbox_shards.c.shard))).scalars().all()
    assert sorted(shards) == list(range(SHARDS))


def _primary_keys(connection: sa.Connection) -> dict[str, list[str]]:
    inspector = sa.inspect(connection)
    return {
        name: inspector.get_pk_constraint(name)["constrained_columns"] for name in metadata.tables
    }


async def test_primary_keys_match_the_tables(db: Database) -> None:
    """compare_metadata does not look at primary keys; tenancy changed some."""
    async with db.read() as conn:
        found = await conn.run_sync(_primary_keys)
    assert found == {
        name: [c.name for c in table.primary_key.columns] for name, table in metadata.tables.items()
    }


async def test_user_and_collapse_key_indexes_hold_only_rows_that_have_one(db: Database) -> None:
    """compare_metadata does not compare an index's WHERE; read the definitions."""
    names = ["ix_notifications_tenant_id_collapse_key", "ix_notifications_tenant_id_user_id_id"]
    if db.is_sqlite:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN ({})"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN ({})"
    async with db.read() as conn:
        found = dict(
            (await conn.exec_driver_sql(query.format(", ".join(f"'{n}'" for n in names)))).all()
        )
    assert sorted(found) == names
    assert "collapse_key IS NOT NULL" in found["ix_notifications_tenant_id_collapse_key"]
    assert "user_id IS NOT NULL" in found["ix_notifications_tenant_id_user_id_id"]


@pytest.mark.postgres
async def test_staged_payloads_are_compressed_with_lz4_where_postgresql_has_it(
    fresh_pg_url: str,
) -> None:
    """SQLite does not compress; this is PostgreSQL's alone."""
    db = Database(fresh_pg_url)
    try:
        async with db.read() as conn:
            has_lz4 = (
                await conn.exec_driver_sql(
                    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                    " WHERE name = 'default_toast_compression'"
                )
            ).scalar()
            if not has_lz4:
                pytest.skip("this PostgreSQL was built without lz4 (or is older than 14)")
            method = (
                await conn.exec_driver_sql(
                    "SELECT attcompression FROM pg_attribute"
                    " WHERE attrelid = 'staged_batches'::regclass AND attname = 'payload'"
                )
            ).scalar()
    finally:
        await db.close()
    assert method == b"l"  # a "char": lz4


async def test_a_collapse_key_is_looked_up_through_its_tenants_index_on_sqlite(
    fresh_sqlite_url: str,
) -> None:
    """Without statistics SQLite chooses an index by how many columns a look-up pins: the
    look-up that supersedes must search (tenant, collapse key), not read all of the tenant's
    notifications through (tenant, id) — as it did with the key indexed alone."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "collapse_key" in statement and statement.lstrip().startswith("SELECT"):
            seen.append((statement, parameters))

    db = Database(fresh_sqlite_url)
    event.listen(sa.Engine, "before_cursor_execute", capture)
    try:
        async with db.write() as conn:
            await notifications.supersede(conn, "default", "a@x", "k", by="new", now=utcnow())
    finally:
        event.remove(sa.Engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen
    async with db.read() as conn:
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)).all()
    await db.close()
    assert any("ix_notifications_tenant_id_collapse_key" in str(row) for row in plan), plan
