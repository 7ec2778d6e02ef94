"""Statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from herald.store.database import Connection


class OneOf(sa.ColumnElement[bool]):
    """``column IN (...)`` with the values given at execution as the parameter ``name`` (a
    list). On PostgreSQL it is ``column = ANY($n)`` with one array parameter: SQLAlchemy renders
    an expanding IN anew at every execution (a seventh of the worker's statement time) and each
    number of values is another statement for PostgreSQL to parse and plan; this text is the
    same whatever the number. Elsewhere it is the expanding IN."""

    inherit_cache = True
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a condition as it is: not "(...) = 1" on SQLite
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: sa.ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def one_of(column: sa.ColumnElement[Any], name: str) -> OneOf:
    return OneOf(column, name)


@compiles(OneOf)
def _in_list(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    values: sa.BindParameter[Any] = sa.bindparam(element.name, expanding=True)
    return compiler.process(element.column.in_(values), **kw)


@compiles(OneOf, "postgresql")
def _any_array(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    values = sa.bindparam(element.name, type_=postgresql.ARRAY(element.column.type))
    return compiler.process(element.column == sa.any_(values), **kw)


def _insert(conn: Connection, table: sa.Table) -> Any:
    module = sqlite if conn.dialect.name == "sqlite" else postgresql
    return module.insert(table)


async def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT rows, silently skipping those whose primary key already exists."""
    if rows:
        await conn.execute(_insert(conn, table).on_conflict_do_nothing(), list(rows))


async def upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    update: Sequence[str],
) -> None:
    """INSERT rows; where the primary key exists, overwrite the ``update`` columns."""
    if not rows:
        return
    stmt = _insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in update}
    )
    await conn.execute(stmt, list(rows))


async def insert_if_absent(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT one row unless its primary key exists; True if it was inserted."""
    result = await conn.execute(_insert(conn, table).on_conflict_do_nothing().values(**values))
    return bool(result.rowcount)


async def lock_until_commit(conn: Connection, key: str) -> None:
    """Hold a lock named ``key`` until this transaction ends, so that a read-then-write on
    ``key`` does not interleave with another's. SQLite needs none: it has one writer, and
    Herald's write transactions start with BEGIN IMMEDIATE."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(key.encode()).digest()
        lock_id = int.from_bytes(digest[:8], "big", signed=True)
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id)))
