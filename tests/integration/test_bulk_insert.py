"""insert_rows stores exactly what SQLAlchemy's insert stores, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from herald.domain.models import DeliveryStatus, NotificationStatus
from herald.store.bulk_insert import insert_many, insert_rows
from herald.store.database import Database
from herald.store.tables import bus_messages, deliveries, notifications

NOW = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)


def notification(i: int, like: int | None = None) -> dict[str, Any]:
    """Notification ``i``, with the values of notification ``like`` (default: its own)."""
    k = i if like is None else like
    return {
        "id": f"n{i}",
        "user_id": None,
        "recipient": f"r{k}@example.com",
        "subject": "Grüße ' \" ;",
        "body": "body",
        "status": NotificationStatus.PENDING,
        "created_at": NOW,
        "updated_at": NOW.replace(microsecond=0) + timedelta(microseconds=k),  # 0: no fraction
        "send_at": None,
    }


def delivery(i: int, **more: Any) -> dict[str, Any]:
    return {
        "id": f"d{i}",
        "notification_id": f"n{i}",
        "channel": "email",
        "recipient": "r@example.com",
        "status": DeliveryStatus.PENDING,
        "next_attempt_at": NOW.replace(microsecond=0),
        "created_at": NOW,
        "updated_at": NOW,
        "content": {"subject": "é", "body": "b", "headers": {"X-A": "1"}},  # attempts: default
        **more,
    }


async def stored(db: Database, table: sa.Table) -> list[tuple[Any, ...]]:
    """The rows as the database holds them (text, not decoded), by id, the id column aside."""
    names = ", ".join(c.name for c in table.c if c.name != "id")
    async with db.read() as conn:
        result = await conn.exec_driver_sql(f"SELECT {names} FROM {table.name} ORDER BY id")
        return [tuple(row) for row in result]


async def test_rows_are_stored_as_sqlalchemys_insert_stores_them(db: Database) -> None:
    async with db.write() as conn:
        await insert_rows(conn, notifications, [notification(0), notification(1)])
        await conn.execute(sa.insert(notifications), [notification(2, 0), notification(3, 1)])
        await insert_rows(conn, deliveries, [delivery(0), delivery(1)])
        await conn.execute(sa.insert(deliveries), [delivery(2), delivery(3)])
    mine = await stored(db, notifications)
    assert mine[:2] == mine[2:]
    mine = await stored(db, deliveries)
    assert [row[1:] for row in mine[:2]] == [row[1:] for row in mine[2:]]  # but notification_id
    async with db.read() as conn:
        attempts = await conn.scalar(sa.select(sa.func.sum(deliveries.c.attempts)))
    assert attempts == 0  # the Python-side default


async def test_rows_with_differing_columns_are_refused(db: Database) -> None:
    """SQLAlchemy's executemany would drop the second row's attempts and last_error."""
    rows = [delivery(0), delivery(1, attempts=2, last_error="451 later")]
    async with db.write() as conn:
        await insert_rows(conn, notifications, [notification(0), notification(1)])
        with pytest.raises(ValueError, match="same columns"):
            await insert_rows(conn, deliveries, rows)


async def test_binary_values_and_empty_headers_go_in(db: Database) -> None:
    rows = [
        {"topic": "t", "partition": 0, "offset": i, "key": None, "value": b"\x00\xff"}
        | {"headers": {}, "created_at": NOW}
        for i in range(2)
    ]
    async with db.write() as conn:
        await insert_rows(conn, bus_messages, rows)
    async with db.read() as conn:
        found = (await conn.execute(sa.select(bus_messages.c.value, bus_messages.c.headers))).all()
    assert found == [(b"\x00\xff", {}), (b"\x00\xff", {})]


async def test_several_tables_go_in_one_statement_on_postgresql(db: Database) -> None:
    """A notification and its deliveries (which refer to it) in one statement: the same rows
    as one insert per table; on PostgreSQL one statement, NOTIFY included."""
    statements: list[str] = []
    postgres = db.dialect == "postgresql"

    def seen(*args: Any) -> None:
        statements.append(args[2])

    async with db.write() as conn:
        sync = conn.sync_connection if postgres else conn.sync
        sa.event.listen(sync, "before_cursor_execute", seen)
        await insert_many(
            conn,
            [
                (notifications, [notification(0), notification(1)]),
                (deliveries, []),  # nothing: left out
                (deliveries, [delivery(0), delivery(1)]),
            ],
            notify="herald_test" if postgres else None,
        )
        sa.event.remove(sync, "before_cursor_execute", seen)
    async with db.write() as conn:
        await insert_rows(conn, notifications, [notification(2, 0), notification(3, 1)])
        await insert_rows(conn, deliveries, [delivery(2), delivery(3)])
    mine = await stored(db, notifications)
    assert mine[:2] == mine[2:]
    mine = await stored(db, deliveries)
    assert [row[1:] for row in mine[:2]] == [row[1:] for row in mine[2:]]
    inserts = [s for s in statements if "INSERT" in s]
    assert len(inserts) == (1 if postgres else 2)
    if postgres:
        assert "pg_notify" in inserts[0]
    else:
        async with db.write() as conn:
            with pytest.raises(ValueError, match="PostgreSQL"):
                await insert_many(conn, [], notify="herald_test")
