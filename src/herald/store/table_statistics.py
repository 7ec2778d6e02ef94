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

_GROWN = sa.text(
    """
    SELECT s.relname
    FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)
      AND c.reltuples < :large
      AND s.n_live_tup >= GREATEST(c.reltuples * :growth, :min_rows)
    ORDER BY s.relname
    """
).bindparams(
    sa.bindparam("tables", type_=sa.ARRAY(sa.String)),
    sa.bindparam("large", type_=sa.Integer),
    sa.bindparam("growth", type_=sa.Integer),
    sa.bindparam("min_rows", type_=sa.Integer),
)


async def analyze_grown(conn: Connection) -> list[str]:
    """ANALYZE the hot tables grown past their threshold (see the module docstring); their
    names. Run outside a transaction's other work: ANALYZE takes a lock of its own per table
    (one that lets reads and writes go on)."""
    if conn.dialect.name != "postgresql":
        return []
    values = {"tables": list(HOT_TABLES), "min_rows": MIN_ROWS, "large": LARGE, "growth": GROWTH}
    grown = list((await conn.execute(_GROWN, values)).scalars())
    for name in grown:
        # A name from HOT_TABLES (the query only returns those), quoted all the same.
        await conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.quote(name)}"))
    return grown
