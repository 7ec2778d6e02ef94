"""Rate limits per client, in process and in Redis, and what happens when Redis goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from herald.api.app import create_app
from herald.reliability.ratelimit import LocalTokenBucket, RedisTokenBucket
from herald.runtime import Runtime
from tests.conftest import SHARED_REDIS_URL, settings_for
from tests.services import PrivateRedis

SEED = {"recipient": "a@example.com", "subject": "Hi", "message": "x"}
URL = "/api/v1/notifications"


async def test_local_bucket_allows_the_burst_then_refills() -> None:
    bucket = LocalTokenBucket(rate=20, burst=5)
    decisions = [await bucket.acquire("client") for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert 0 < decisions[-1].retry_after <= 1 / 20
    assert (await bucket.acquire("someone-else")).allowed  # buckets are per client
    await asyncio.sleep(0.1)  # two tokens come back at 20/s
    assert (await bucket.acquire("client")).allowed


@pytest.mark.redis
async def test_redis_buckets_are_shared_by_every_api_process(redis_prefix: str) -> None:
    clients = [Redis.from_url(SHARED_REDIS_URL) for _ in range(2)]
    # Two limiters on two connections stand for two API processes.
    limiters = [RedisTokenBucket(c, rate=1, burst=6, prefix=redis_prefix) for c in clients]
    decisions = [await limiters[i % 2].acquire("client") for i in range(10)]
    assert sum(d.allowed for d in decisions) == 6
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)
    for client in clients:
        await client.aclose()


@pytest.mark.redis
async def test_without_redis_the_limit_falls_back_to_this_process(
    private_redis: PrivateRedis,
) -> None:
    client = Redis.from_url(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = RedisTokenBucket(client, rate=1, burst=3, prefix="t:")
    assert (await limiter.acquire("c")).allowed
    private_redis.stop()
    decisions = [await limiter.acquire("c") for _ in range(5)]
    # Fail-open, but not unlimited: the in-process bucket (burst 3) still applies.
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    await client.aclose()


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
async def limited(
    request: pytest.FixtureRequest, fresh_sqlite_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    overrides: dict[str, object] = {"rate_limit_per_second": 0.5, "rate_limit_burst": 5}
    if request.param == "redis":
        overrides |= {
            "redis_url": SHARED_REDIS_URL,
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    runtime = Runtime(settings_for(fresh_sqlite_url, **overrides))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http
    await runtime.close()


async def test_a_burst_over_the_limit_gets_429_with_retry_after(
    limited: httpx.AsyncClient,
) -> None:
    responses = [await limited.post(URL, json=SEED) for _ in range(12)]
    codes = [r.status_code for r in responses]
    assert codes == [202] * 5 + [429] * 7
    refused = responses[-1]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # one token per 2 s
    # Another client (another API key) has its own budget.
    other = await limited.post(URL, json=SEED, headers={"Authorization": "Bearer other-key"})
    assert other.status_code == 202
    assert (await limited.get("/healthz")).status_code == 200  # probes are never limited


@pytest.mark.redis
async def test_repeats_are_answered_from_redis_and_checked_there(
    fresh_sqlite_url: str, redis_prefix: str
) -> None:
    runtime = Runtime(
        settings_for(fresh_sqlite_url, redis_url=SHARED_REDIS_URL, redis_prefix=redis_prefix)
    )
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        first = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k1"})
        cached = await runtime.redis.get(f"{redis_prefix}idempotency:global:k1")  # type: ignore[union-attr]
        assert cached is not None
        # The database is now closed: only Redis can answer these.
        await runtime.db.close()
        again = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k1"})
        changed = await http.post(
            URL, json={**SEED, "subject": "Other"}, headers={"Idempotency-Key": "k1"}
        )
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422
    await runtime.close()


@pytest.mark.redis
async def test_with_redis_down_idempotency_falls_back_to_the_database(
    fresh_sqlite_url: str, private_redis: PrivateRedis
) -> None:
    runtime = Runtime(settings_for(fresh_sqlite_url, redis_url=private_redis.url))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        private_redis.stop()
        first = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k2"})
        again = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k2"})
        listed = (await http.get(URL)).json()["items"]
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert len(listed) == 1  # nothing lost, nothing duplicated
    await runtime.close()


async def test_a_throttle_waits_for_tokens_instead_of_refusing() -> None:
    from herald.reliability.ratelimit import Throttle

    throttle = Throttle(LocalTokenBucket(rate=20, burst=2), "smtp")
    waits = [await throttle.take() for _ in range(4)]
    assert waits[:2] == [0.0, 0.0]  # the burst
    assert all(w > 0 for w in waits[2:])  # then one token per 50 ms, waited for
