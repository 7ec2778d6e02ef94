"""Fresh planner statistics for tables that grow fast while young (PostgreSQL).

asyncpg keeps each statement prepared, and after five executions PostgreSQL may settle on a
generic plan, made from the statistics of that moment. In a new database those say the tables
are nearly empty, so a look-up of a batch of ids (``id = ANY($1)``) is planned as a scan of
the whole table, and that plan is kept while the table grows, until the next ANALYZE makes
PostgreSQL plan again. Autovacuum's ANALYZE comes only about a minute in (its naptime, then
10 % of the rows changed): a new deployment taking a load test in its first minute scanned
tables of tens of thousands of rows per statement (in a ten-second benchmark, a third of
PostgreSQL's CPU per notification).

So a hot table is analyzed as soon as it holds GROWTH times the rows of its last analysis (or
MIN_ROWS, if never analyzed) — at about a thousand rows, then four thousand, sixteen thousand,
… — up to LARGE rows, beyond which autovacuum's own thresholds come sooner. A check is one
read of the statistics views; SQLite needs none of this (its planner keeps no such plans).
"""

from __future__ import annotations

import sqlalchemy as sa

from herald.store.database import Connection
from herald.store.tables import (
    deliveries,
    delivery_attempts,
    idempotency_keys,
    notification_events,
    notifications,
    outbox_events,
)

HOT_TABLES = tuple(
    t.name
    for t in (
        notifications,
        deliveries,
        outbox_events,
        notification_events,
        delivery_attempts,
        idempotency_keys,
    )
)
MIN_ROWS = 1_000
GROWTH = 4
LARGE = 1_000_000

_SIZES = sa.text(
    """
    SELECT s.relname, s.n_live_tup, c.reltuples
    FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)
    ORDER BY s.relname
    """
).bindparams(sa.bindparam("tables", type_=sa.ARRAY(sa.String)))


async def analyze_grown(conn: Connection, analyzed: dict[str, float]) -> list[str]:
    """ANALYZE the hot tables grown past their threshold (see the module docstring); their
    names. ``analyzed``: the rows each table had when this process last analyzed it, kept by
    the caller and updated here — if the database refuses (ANALYZE by a role that does not own
    the table only warns), the table is not tried again until it has grown once more. On an
    autocommit connection: ANALYZE takes a lock of its own per table (reads and writes go on)."""
    if conn.dialect.name != "postgresql":
        return []
    grown = []
    for name, rows, estimate in await conn.execute(_SIZES, {"tables": list(HOT_TABLES)}):
        known = max(estimate, analyzed.get(name, -1.0))  # reltuples is -1 until analyzed
        if rows >= max(known * GROWTH, MIN_ROWS) and known < LARGE:
            # A name from HOT_TABLES (the query only returns those), quoted all the same.
            await conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.quote(name)}"))
            analyzed[name] = rows
            grown.append(name)
    return grown
