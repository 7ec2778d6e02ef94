"""The users and templates one intake call plans with, each read once.

A batch of a thousand items naming one template reads it once, and its users in one query.
Lives for one intake call; it takes a read connection only when it first has to read (most
notifications name no user and no template, and then cost no connection at all)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

from herald.store import templates, users
from herald.store.database import Connection, Database
from herald.store.templates import TemplateRecord
from herald.store.users import UserRecord


class Lookups:
    def __init__(self, db: Database, stack: AsyncExitStack) -> None:
        self._db = db
        self._stack = stack
        self._conn: Connection | None = None
        self._users: dict[tuple[str, str], UserRecord | None] = {}
        self._templates: dict[tuple[str, str, int | None], TemplateRecord | None] = {}

    @classmethod
    @asynccontextmanager
    async def reading(cls, db: Database) -> AsyncIterator[Lookups]:
        """Lookups whose read connection, if one was taken, goes back to the pool on exit."""
        async with AsyncExitStack() as stack:
            yield cls(db, stack)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def conn(self) -> Connection:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._db.read())
        return self._conn

    async def load_users(self, tenant: str, user_ids: Iterable[str]) -> None:
        """Read these users in one query (an id not found is remembered as absent)."""
        wanted = {i for i in user_ids if (tenant, i) not in self._users}
        if not wanted:
            return
        found = await users.get_many(await self.conn(), tenant, sorted(wanted))
        for user_id in wanted:
            self._users[(tenant, user_id)] = found.get(user_id)

    async def user(self, tenant: str, user_id: str) -> UserRecord | None:
        key = (tenant, user_id)
        if key not in self._users:
            self._users[key] = await users.get(await self.conn(), tenant, user_id)
        return self._users[key]

    async def template(
        self, tenant: str, name: str, version: int | None = None
    ) -> TemplateRecord | None:
        """The named template's given version, or its latest."""
        key = (tenant, name, version)
        if key not in self._templates:
            self._templates[key] = await templates.get(await self.conn(), tenant, name, version)
        return self._templates[key]
