"""one_of: a list parameter of any length, one statement text on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from herald.clock import utcnow
from herald.store.database import Database
from herald.store.one_of import one_of
from herald.store.tables import idempotency_keys

K = idempotency_keys.c
_FIND = sa.select(K.key).where(K.scope == "s", one_of(K.key, "keys")).order_by(K.key)


async def test_one_of_finds_the_listed_rows_with_one_statement_for_every_length(
    db: Database,
) -> None:
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            sa.insert(idempotency_keys),
            [
                {
                    "scope": "s",
                    "key": f"k{i}" if i != 4 else "k4" + "x" * 253,  # the column's 255
                    "request_hash": "h",
                    "resource_id": "r",
                    "response_status": 202,
                    "response_body": {},
                    "created_at": now,
                    "expires_at": now,
                }
                for i in range(5)
            ],
        )
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    sa.event.listen(db.read_engine, "before_cursor_execute", seen)
    try:
        async with db.read() as conn:
            found = [
                list((await conn.execute(_FIND, {"keys": keys})).scalars())
                for keys in (
                    [],
                    ["k1"],
                    ["k0", "k3", "nope"],
                    ["k0", "k1", "k2", "k3", "k4" + "x" * 253],
                    ["k4" + "x" * 300],  # longer than the column: never cut down to "k4..."
                )
            ]
    finally:
        sa.event.remove(db.read_engine, "before_cursor_execute", seen)
    k4 = "k4" + "x" * 253
    assert found == [[], ["k1"], ["k0", "k3"], ["k0", "k1", "k2", "k3", k4], []]
    if db.is_sqlite:
        assert len(set(statements)) == 4  # an IN list of each length
    else:
        assert len(set(statements)) == 1, statements  # one array parameter
        assert "= ANY(" in statements[0]


def test_the_columns_table_is_in_the_from_clause_as_with_in() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from herald.store.tables import deliveries, notifications

    query = sa.select(deliveries.c.id).where(one_of(notifications.c.id, "ids"))
    for dialect in (postgresql.asyncpg.dialect(), sqlite.dialect()):  # type: ignore[attr-defined]
        assert "FROM deliveries, notifications" in str(query.compile(dialect=dialect))


def test_a_sized_string_behind_a_type_decorator_is_refused() -> None:
    class Wrapped(sa.TypeDecorator[str]):
        impl = sa.String(10)
        cache_ok = True

    with pytest.raises(TypeError):
        one_of(sa.column("x", Wrapped()), "xs")
