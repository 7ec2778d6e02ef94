"""A Redis copy of stored Idempotency-Key responses, so repeats skip the database.

The database stays the source of truth: the cache is written after the database commit, a
miss or a Redis error simply falls through to the database, and entries expire with the key.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from herald.observability.logging import get_logger
from herald.store.idempotency import StoredResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = get_logger(__name__)


class IdempotencyCache:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, scope: str, key: str) -> str:
        return f"{self.prefix}idempotency:{scope}:{key}"

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        from redis.exceptions import RedisError

        try:
            raw = await self.redis.get(self._key(scope, key))
        except (RedisError, OSError) as exc:
            log.warning("idempotency_cache.unavailable", error=str(exc))
            return None
        if raw is None:
            return None
        data = json.loads(raw)
        return StoredResponse(data["hash"], data["id"], data["status"], data["body"])

    async def put(self, scope: str, key: str, response: StoredResponse, ttl: float) -> None:
        from redis.exceptions import RedisError

        value = json.dumps(
            {
                "hash": response.request_hash,
                "id": response.resource_id,
                "status": response.status,
                "body": response.body,
            }
        )
        try:
            await self.redis.set(self._key(scope, key), value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            log.warning("idempotency_cache.unavailable", error=str(exc))
