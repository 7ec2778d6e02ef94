"""An intake call reads each user and template once, however many items name them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from herald.clock import utcnow
from herald.pipeline.lookups import Lookups
from herald.store import templates, users
from herald.store.database import Database
from herald.store.users import Profile


async def test_a_batch_reads_its_users_in_one_query_and_a_template_once(db: Database) -> None:
    now = utcnow()
    async with db.write() as conn:
        for i in range(3):
            await users.put(conn, "t1", f"u{i}", Profile(email=f"u{i}@example.com"), now)
        await templates.add_version(
            conn,
            "t1",
            "welcome",
            category=None,
            description=None,
            channels={"email": {"default": {"subject": "Hi", "text": "Hello"}}},
            now=now,
        )

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    async with Lookups.reading(db) as lookups:
        await lookups.load_users("t1", [])  # nothing to read: no connection taken yet
        assert not lookups.connected
        await lookups.conn()
        sa.event.listen(db.read_engine, "before_cursor_execute", count)
        await lookups.load_users("t1", ["u0", "u1", "u2", "nobody"])
        found = [await lookups.user("t1", f"u{i}") for i in range(3)]
        missing = await lookups.user("t1", "nobody")
        first = [await lookups.template("t1", "welcome") for _ in range(5)]
        other_tenant = await lookups.user("t2", "u0")
    sa.event.remove(db.read_engine, "before_cursor_execute", count)

    assert [u.id for u in found if u is not None] == ["u0", "u1", "u2"]
    assert missing is None
    assert other_tenant is None  # tenants apart: looked up on its own, not found
    assert {t.name for t in first if t is not None} == {"welcome"}
    # One for the users, one for the template, one for the other tenant's user.
    assert len(statements) == 3, statements
