"""Look-ups of stored Idempotency-Key responses, read together.

Every POST with a key first looks for a response stored under it. Thirty-two clients posting
at once would make thirty-two reads; here a look-up is queued, and one reader takes every
look-up queued so far into one statement per tenant, while the next ones queue up (as the
group commit does for writes). With a Redis cache, the queued keys are looked for there first,
in one MGET, and only those it lacks are read from the database; a response found there (a
repeat) is then copied to the cache, until it expires, so further repeats skip the database.
Only repeats fill the cache: a first request's response is not copied there when it is
stored (most keys are never repeated, and that write cost a sixteenth of a busy API's CPU).
An expired response is forgotten in a write of its own, so the key can be used again.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from herald.clock import utcnow
from herald.store import idempotency
from herald.store.database import Database
from herald.store.idempotency import StoredResponse
from herald.store.idempotency_cache import IdempotencyCache, Key


class IdempotencyReads:
    def __init__(self, db: Database, cache: IdempotencyCache | None = None) -> None:
        self.db = db
        self.cache = cache
        self._queued: dict[Key, list[asyncio.Future[StoredResponse | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def find(self, scope: str, key: str) -> StoredResponse | None:
        """The live response stored under ``key`` in ``scope``, or None."""
        result: asyncio.Future[StoredResponse | None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault((scope, key), []).append(result)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_all(), name="idempotency-reads")
        return await result

    async def _read_all(self) -> None:
        try:
            while self._queued:
                queued, self._queued = self._queued, {}
                try:
                    found = await self._read(list(queued))
                except Exception as exc:
                    _settle(queued, exc)
                else:
                    for key, waiting in queued.items():
                        for result in waiting:
                            if not result.done():
                                result.set_result(found.get(key))
        except BaseException:  # cancelled (the process stops): nobody may wait forever
            _settle(self._queued, RuntimeError("stopped"))
            self._queued = {}
            raise

    async def _read(self, keys: list[Key]) -> dict[Key, StoredResponse]:
        found: dict[Key, StoredResponse] = {}
        if self.cache is not None:
            found = await self.cache.get_many(keys)
            keys = [key for key in keys if key not in found]
            if not keys:
                return found
        by_scope: dict[str, list[str]] = {}
        for scope, key in keys:
            by_scope.setdefault(scope, []).append(key)
        now = utcnow()
        expired: dict[str, list[str]] = {}
        repeats: list[tuple[Key, StoredResponse, datetime]] = []
        async with self.db.read() as conn:
            for scope, scoped in by_scope.items():
                live, gone = await idempotency.find_many(conn, scope, scoped, now)
                repeats += [((scope, key), *found) for key, found in live.items()]
                if gone:
                    expired[scope] = gone
        if expired:
            async with self.db.write() as conn:
                for scope, gone in expired.items():
                    await idempotency.forget_expired(conn, scope, gone, now)
        if repeats and self.cache is not None:
            cache, copied_at = self.cache, utcnow()  # after the reads and any forgetting
            await asyncio.gather(
                *(
                    cache.put(*key, response, (expires_at - copied_at).total_seconds())
                    for key, response, expires_at in repeats
                    if expires_at > copied_at
                )
            )
        return found | {key: response for key, response, _ in repeats}


def _settle(queued: dict[Key, list[asyncio.Future[StoredResponse | None]]], exc: Exception) -> None:
    for waiting in queued.values():
        for result in waiting:
            if not result.done():
                result.set_exception(exc)
