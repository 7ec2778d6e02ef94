"""``column = ANY(:list)`` on PostgreSQL, ``column IN (...)`` on SQLite: one statement text for
lists of any length.

An expanding ``IN`` (``sa.bindparam(..., expanding=True)``) is rendered anew for each call,
one parameter per element, so every length of list is a statement of its own: SQLAlchemy
renders it on every execution, and asyncpg prepares each new length on each connection (a
round trip, and PostgreSQL parsing and planning it again). In the worker, with batches of
varying size, py-spy put that at a tenth of its CPU. On PostgreSQL the list is instead one array
parameter, so the statement is rendered once and stays prepared. SQLite has no arrays and
nothing to prepare across a round trip: there it is the expanding ``IN``.

    sa.select(D.id).where(one_of(D.id, "ids"))   # executed with {"ids": [...]}
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class OneOf(ColumnElement[Any]):
    """``column`` is one of the list bound to ``name`` (see the module docstring)."""

    type = sa.types.NullType()
    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        item = column.type
        if isinstance(item, sa.TypeDecorator) and isinstance(item.impl, sa.String):
            # Its array would keep the length, and PostgreSQL's cast cuts longer values to it
            # (see _any_array); no column of Herald's is one.
            raise TypeError("one_of: a TypeDecorator over a String is not supported")
        self.column = column
        self.name = name

    @property
    def _from_objects(self) -> list[Any]:
        """The column's table is in the statement's FROM, as with ``in_``."""
        return list(self.column._from_objects)


def one_of(column: ColumnElement[Any], name: str) -> OneOf:
    return OneOf(column, name)


@compiles(OneOf, "postgresql")
def _any_array(element: OneOf, compiler: Any, **kw: Any) -> str:
    item = element.column.type
    if isinstance(item, sa.String) and not isinstance(item, sa.Enum) and item.length:
        # No length: PostgreSQL's explicit cast to VARCHAR(n)[] cuts a longer value to n
        # characters, which could then match. (An Enum keeps its own type.)
        item = sa.String(collation=item.collation)
    array = sa.bindparam(element.name, type_=postgresql.ARRAY(item))
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(array, **kw)})"


@compiles(OneOf)
def _expanding_in(element: OneOf, compiler: Any, **kw: Any) -> str:
    listed = element.column.in_(sa.bindparam(element.name, expanding=True))
    result: str = compiler.process(listed, **kw)
    return result
