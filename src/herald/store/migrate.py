"""Apply and inspect Alembic migrations from inside Herald (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from herald.errors import ConfigError
from herald.store.database import Database

_MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every Herald process.
_PG_MIGRATION_LOCK = 0x68_65_72_61_6C_64


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: sa.Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(db: Database, revision: str = "head") -> None:
    async with db.write() as conn:
        if not db.is_sqlite:
            # Two processes migrating at once would race on DDL; serialise them.
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        await conn.run_sync(_upgrade, revision)


async def current_revision(db: Database) -> str | None:
    async with db.read() as conn:
        return await conn.run_sync(_current)


async def require_current(db: Database) -> None:
    """Refuse to run against a database whose schema is not at this build's head."""
    current, head = await current_revision(db), head_revision()
    if current != head:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, this Herald needs {head}: "
            "run `herald migrate`"
        )
