"""Many rows into one table in one statement, with less work per row than SQLAlchemy's.

SQLAlchemy's executemany takes every row's parameters through its compiled statement (a dict
per row, each key's bind processor looked up on the way): for the rows of a batch of a
thousand notifications that was a seventh of the API's time on SQLite. Here the statement is
built once per table and set of columns and each value goes through its column's own bind
processor, then (through SQLAlchemy's exec_driver_sql, so event hooks still see it):

- on SQLite, each row is a tuple for the driver's executemany (made a column at a time);
- on PostgreSQL, each column is one array and the rows are ``unnest``-ed from them:
  ``INSERT ... SELECT * FROM unnest($1::VARCHAR(36)[], ...)``. asyncpg's executemany sends
  a Bind and an Execute per row, which PostgreSQL runs as that many statements (ten per
  notification through the distributed pipeline); this is one, whatever the number of rows,
  and its text does not depend on it, so it stays prepared.

``insert_many`` writes several tables' rows; on PostgreSQL in one statement, each table's
insert a data-modifying ``WITH`` clause (with ``pg_notify`` if asked), so a unit of work's rows
(notifications, deliveries, the outbox, the journal) and its NOTIFY are one round trip instead
of one each. Foreign keys hold between them: PostgreSQL checks them at the end of the statement.

For a table with a default computed in Python it is SQLAlchemy's insert. Rows must all have
the same columns (SQLAlchemy would silently drop what the first row lacks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from herald.store.database import Connection

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    sql: str
    into: str  # INSERT INTO table (columns)
    casts: tuple[str, ...]  # PostgreSQL: each column's array type
    keys: tuple[str, ...]
    processors: tuple[Processor, ...]
    defaults: tuple[Any, ...]  # values of the columns the rows leave to a Python default

    def columns(self, rows: Sequence[dict[str, Any]]) -> tuple[list[Any], ...]:
        """The rows' values, one list per column (PostgreSQL's arrays; SQLite's rows are
        these zipped: a column at a time is a quarter of the cost of a row at a time)."""
        given = (
            [row[key] for row in rows] if process is None else [process(row[key]) for row in rows]
            for key, process in zip(self.keys, self.processors, strict=True)
        )
        return (*given, *([default] * len(rows) for default in self.defaults))


Rows = Sequence[dict[str, Any]]


async def insert_rows(conn: Connection, table: sa.Table, rows: Rows) -> None:
    if not rows:
        return
    plan = _plan(table, conn.dialect, _keys(table, rows))
    if plan is None:
        await conn.execute(sa.insert(table), list(rows))
    elif conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(plan.sql, plan.columns(rows))
    else:
        await conn.exec_driver_sql(plan.sql, list(zip(*plan.columns(rows), strict=True)))


async def insert_many(
    conn: Connection, batches: Sequence[tuple[sa.Table, Rows]], *, notify: str | None = None
) -> None:
    """Each table's rows, in the order given; ``notify``: a PostgreSQL channel to NOTIFY (on
    commit, as NOTIFY does)."""
    batches = [(table, rows) for table, rows in batches if rows]
    postgres = conn.dialect.name == "postgresql"
    if notify is not None and not postgres:
        raise ValueError("NOTIFY is PostgreSQL's")
    plans = [_plan(table, conn.dialect, _keys(table, rows)) for table, rows in batches]
    planned = [(plan, rows) for plan, (_, rows) in zip(plans, batches, strict=True) if plan]
    if not postgres or len(planned) < len(batches) or (len(planned) < 2 and notify is None):
        for table, rows in batches:
            await insert_rows(conn, table, rows)
        if notify is not None:
            await conn.execute(sa.select(sa.func.pg_notify(notify, "")))
        return
    sql = _together(tuple((plan.into, plan.casts) for plan, _ in planned), notify is not None)
    values = [v for plan, rows in planned for v in plan.columns(rows)]
    await conn.exec_driver_sql(sql, (*values, *([] if notify is None else [notify])))


@lru_cache(maxsize=256)
def _together(inserts: tuple[tuple[str, tuple[str, ...]], ...], notify: bool) -> str:
    """One PostgreSQL statement: each insert (its INSERT INTO and its columns' types) a WITH
    clause, the parameters numbered on from one to the next; the channel to notify last."""
    clauses, number = [], 0
    for i, (into, casts) in enumerate(inserts):
        clauses.append(f"w{i} AS ({_unnest_insert(into, casts, number)})")
        number += len(casts)
    last = f"SELECT pg_notify(${number + 1}::text, '')" if notify else "SELECT 1"
    return f"WITH {', '.join(clauses)} {last}"


def _unnest_insert(into: str, casts: tuple[str, ...], before: int = 0) -> str:
    """PostgreSQL's insert of the rows of one array per column, parameters $before+1 on."""
    arrays = ", ".join(f"${before + n}::{cast}[]" for n, cast in enumerate(casts, 1))
    return f"{into} SELECT * FROM unnest({arrays})"


def _keys(table: sa.Table, rows: Rows) -> tuple[str, ...]:
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        # SQLAlchemy's executemany would take the first row's columns and drop the others'.
        raise ValueError(f"rows for {table.name} must all have the same columns")
    return tuple(keys)


@lru_cache(maxsize=256)
def _plan(table: sa.Table, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Plan | None:
    """The statement for rows with these keys, or None where SQLAlchemy's insert is needed."""
    if any(key not in table.c for key in keys):
        return None  # let SQLAlchemy name the unknown column
    defaulted: list[sa.Column[Any]] = []
    for column in table.c:
        if column.key in keys or column.default is None:
            continue  # given, or left to the database (server default, autoincrement)
        if not column.default.is_scalar:
            return None  # computed in Python per row: SQLAlchemy's insert does that
        defaulted.append(column)
    columns = [table.c[key] for key in keys] + defaulted
    quote = dialect.identifier_preparer.quote
    into = "INSERT INTO {} ({})".format(
        dialect.identifier_preparer.format_table(table),
        ", ".join(quote(c.name) for c in columns),
    )
    casts = tuple(dialect.type_compiler_instance.process(c.type) for c in columns)
    if dialect.name == "postgresql":
        sql = _unnest_insert(into, casts)
    else:
        sql = f"{into} VALUES ({', '.join('?' for _ in columns)})"
    processors = tuple(_bind_processor(table.c[key].type, dialect) for key in keys)
    defaults = tuple(
        _processed(c.type._cached_bind_processor(dialect), c.default.arg)  # type: ignore[union-attr]
        for c in defaulted
    )
    return _Plan(sql, into, casts, keys, processors, defaults)


def _bind_processor(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Processor:
    """The column's bind processor; none for a LargeBinary on SQLite: its driver stores bytes
    as a BLOB as they are, and SQLAlchemy's wrapping each in a memoryview was 3 % of a batch's
    time (a job's bytes on the embedded log). Its values are bytes (typed so)."""
    if dialect.name == "sqlite" and type(type_) is sa.LargeBinary:
        return None
    return type_._cached_bind_processor(dialect)


def _processed(process: Processor, value: Any) -> Any:
    return value if process is None else process(value)
