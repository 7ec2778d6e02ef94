"""`herald staged` through the real command: the batches waiting and why one failed; a failed
batch made due now (after its cause is mended) instead of waiting out its backoff."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from herald.clock import utcnow
from herald.store import staged_batches
from herald.store.database import Database
from herald.store.tables import staged_batches as table
from tests.e2e.test_cli import herald

pytestmark = pytest.mark.slow


def test_failed_batches_are_listed_and_retried_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'herald.db'}"
    env = {"HERALD_DATABASE_URL": url}
    empty = herald("staged", "list", env=env, cwd=tmp_path)  # migrates the new database
    assert empty.stdout.splitlines() == ["0 staged batch(es)"], empty.stderr
    later = utcnow() + timedelta(hours=1)

    async def stage() -> None:
        db = Database(url)
        async with db.write() as conn:
            for n, tenant in enumerate(("acme", "globex")):
                row = staged_batches.row(tenant, utcnow(), [f"id-{n}-a", f"id-{n}-b"], b"{}")
                await conn.execute(sa.insert(table).values(**row))
            await conn.execute(
                sa.update(table)
                .where(table.c.tenant_id == "acme")
                .values(attempts=3, last_error="IntegrityError: boom", next_try_at=later)
            )
        await db.close()

    asyncio.run(stage())
    everything = herald("staged", "list", env=env, cwd=tmp_path).stdout.splitlines()
    failed = herald("staged", "list", "--failed", env=env, cwd=tmp_path).stdout.splitlines()
    assert len(everything) == 3
    assert everything[-1] == "2 staged batch(es)"
    [line, total] = failed
    assert line.split()[1:4] == ["acme", "2", "3"]
    assert line.endswith("IntegrityError: boom")
    assert total == "1 staged batch(es)"

    nothing = herald("staged", "retry", env=env, cwd=tmp_path)
    assert nothing.returncode == 2
    assert "give batch ids, or --all-failed" in nothing.stderr
    retried = herald("staged", "retry", "--all-failed", env=env, cwd=tmp_path)
    assert retried.stdout.strip() == "1 batch(es) due now", retried.stderr
    again = herald("staged", "retry", line.split()[0], env=env, cwd=tmp_path)
    assert again.stdout.strip() == "0 batch(es) due now"  # due already
    due = herald("staged", "list", "--failed", env=env, cwd=tmp_path).stdout.splitlines()[0]
    assert "IntegrityError: boom" in due  # still listed (with its error) until written out
