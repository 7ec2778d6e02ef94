"""A Redis copy of stored Idempotency-Key responses, so repeats skip the database.

The database stays the source of truth: the cache is written after the database commit, a
miss or a Redis error simply falls through to the database, and entries expire with the key.
Concurrent requests share round trips: look-ups come in lists (one MGET, see
pipeline/idempotency_reads), and the writes queued while one is under way go together in one
pipeline, each caller still waiting for its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from herald.observability.logging import get_logger
from herald.store.idempotency import StoredResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)

Key = tuple[str, str]  # (scope, key)
# A write waiting for its turn: Redis key, value, time to live in ms, and its caller's future.
_Put = tuple[str, str, int, "asyncio.Future[None]"]


class IdempotencyCache:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._puts: list[_Put] = []
        self._writer: asyncio.Task[None] | None = None

    def _key(self, scope: str, key: str) -> str:
        return f"{self.prefix}idempotency:{scope}:{key}"

    async def get_many(self, keys: Sequence[Key]) -> dict[Key, StoredResponse]:
        from redis.exceptions import RedisError

        try:
            raws = await self.redis.mget([self._key(scope, key) for scope, key in keys])
        except (RedisError, OSError) as exc:
            log.warning("idempotency_cache.unavailable", error=str(exc))
            return {}
        found: dict[Key, StoredResponse] = {}
        for key, raw in zip(keys, raws, strict=True):
            if raw is not None:
                data = json.loads(raw)
                found[key] = StoredResponse(data["hash"], data["id"], data["status"], data["body"])
        return found

    async def put(self, scope: str, key: str, response: StoredResponse, ttl: float) -> None:
        value = json.dumps(
            {
                "hash": response.request_hash,
                "id": response.resource_id,
                "status": response.status,
                "body": response.body,
            }
        )
        done = asyncio.get_running_loop().create_future()
        self._puts.append((self._key(scope, key), value, max(1, int(ttl * 1000)), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="idempotency-cache")
        await done

    async def _write_all(self) -> None:
        from redis.exceptions import RedisError

        try:
            while self._puts:
                puts, self._puts = self._puts, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for name, value, ttl_ms, _ in puts:
                            pipe.set(name, value, px=ttl_ms)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    log.warning("idempotency_cache.unavailable", error=str(exc))
                _settle(puts)
        finally:  # cancelled (the process stops): nobody may wait forever
            _settle(self._puts)
            self._puts = []


def _settle(puts: list[_Put]) -> None:
    for *_, done in puts:
        if not done.done():
            done.set_result(None)
