"""SQLite's own share of a stored notification: its rows inserted with nothing of Herald around.

    .venv/bin/python benchmarks/sqlite_floor.py [--batch 1000] [--rounds 10]

Herald's schema (tables and indexes as `herald migrate` makes them) in a new database file, in
WAL mode with synchronous=FULL as `herald serve` runs it; each round inserts `batch`
notifications, one email delivery each and one journal step each (what intake writes for a
notification to an inline recipient, besides the job on the bus), with the standard library's
sqlite3 executemany (C), in one transaction, and commits. Printed: microseconds per item for
the notification and delivery rows, and for everything with the commit, the mean of the rounds
after the first. This is the floor under batch ingest on SQLite: whatever Herald's Python costs
comes on top of it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness import ROOT  # noqa: F401  (puts the repo root on sys.path)
from herald.ids import uuid7
from herald.store.tables import deliveries, metadata, notification_events, notifications


def insert(conn: sqlite3.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    marks = ", ".join("?" for _ in columns)
    conn.executemany(
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})",
        [tuple(row[c] for c in columns) for row in rows],
    )


def one_round(conn: sqlite3.Connection, batch: int) -> tuple[float, float]:
    now = datetime.now(UTC).isoformat()
    ids = [uuid7() for _ in range(batch)]
    common = {"created_at": now, "updated_at": now}
    notes = [
        {
            "id": i,
            "tenant_id": "default",
            "recipient": f"user-{i[-12:]}@example.com",
            "subject": "Your order has shipped",
            "body": "Hello, your order is on its way. " * 6,
            "status": "PENDING",
            "priority": "normal",
            **common,
        }
        for i in ids
    ]
    content = json.dumps({"subject": notes[0]["subject"], "body": notes[0]["body"]})
    sends = [
        {
            "id": uuid7(),
            "notification_id": n["id"],
            "channel": "email",
            "recipient": n["recipient"],
            "status": "PENDING",
            "attempts": 0,
            "content": content,
            **common,
        }
        for n in notes
    ]
    steps = [{"notification_id": i, "step": "routed", "at": now, "detail": "to email"} for i in ids]
    started = time.perf_counter()
    conn.execute("BEGIN")
    insert(conn, notifications, notes)
    insert(conn, deliveries, sends)
    rows_done = time.perf_counter()
    insert(conn, notification_events, steps)
    conn.execute("COMMIT")
    finished = time.perf_counter()
    return (rows_done - started) / batch * 1e6, (finished - started) / batch * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "herald.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        metadata.create_all(engine)
        engine.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        rounds = [one_round(conn, args.batch) for _ in range(args.rounds)][1:]
        conn.close()
    rows = sum(r for r, _ in rounds) / len(rounds)
    everything = sum(a for _, a in rounds) / len(rounds)
    print(f"notification + delivery rows: {rows:.1f} us per item")
    print(f"with the journal step and the commit: {everything:.1f} us per item")


if __name__ == "__main__":
    main()
