"""Rate limits per client, in process and in Redis, and what happens when Redis goes away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from redis.asyncio import Redis

from herald.api.app import create_app
from herald.clock import utcnow
from herald.reliability.ratelimit import LocalTokenBucket, RedisTokenBucket
from herald.runtime import Runtime
from herald.store import api_keys
from herald.tenancy import DEFAULT_TENANT
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
    limiter = RedisTokenBucket(client, rate=0.1, burst=3, prefix="t:")  # no refill in the test
    assert (await limiter.acquire("c")).allowed
    private_redis.stop()
    decisions = [await limiter.acquire("c") for _ in range(5)]
    # Fail-open, but not unlimited: the in-process bucket (burst 3) still applies.
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    await client.aclose()


@asynccontextmanager
async def limited_api(
    database_url: str, redis_prefix: str | None, *, rate: float, burst: int
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The API with a rate limit per API key: buckets in this process, or in Redis. Yields a
    client sending one key, and the Authorization header of another key."""
    overrides: dict[str, object] = {"rate_limit_per_second": rate, "rate_limit_burst": burst}
    if redis_prefix is not None:
        overrides |= {"redis_url": SHARED_REDIS_URL, "redis_prefix": redis_prefix}
    runtime = Runtime(settings_for(database_url, **overrides))
    await runtime.start(migrate=False)
    try:
        async with runtime.db.write() as conn:
            keys = [
                (await api_keys.create(conn, DEFAULT_TENANT, name, ["send"], now=utcnow()))[1]
                for name in ("mine", "other")
            ]
        mine, other = ({"Authorization": f"Bearer {key}"} for key in keys)
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=mine
        ) as http:
            yield http, other
    finally:
        await runtime.close()


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def bucket_prefix(request: pytest.FixtureRequest) -> str | None:
    """Where the token buckets live: None for this process, else a Redis key prefix."""
    if request.param == "redis":
        prefix: str = request.getfixturevalue("redis_prefix")
        return prefix
    return None


@pytest.fixture
async def limited(
    fresh_sqlite_url: str, bucket_prefix: str | None
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with limited_api(fresh_sqlite_url, bucket_prefix, rate=0.5, burst=5) as api:
        yield api


async def test_a_burst_over_the_limit_gets_429_with_retry_after(
    limited: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    limited, other_key = limited
    responses = [await limited.post(URL, json=SEED) for _ in range(12)]
    codes = [r.status_code for r in responses]
    assert codes == [202] * 5 + [429] * 7
    refused = responses[-1]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 2  # one token per 2 s
    # Another API key has its own budget.
    other = await limited.post(URL, json=SEED, headers=other_key)
    assert other.status_code == 202
    assert (await limited.get("/healthz")).status_code == 200  # probes are never limited


# Ten times the limit, for a couple of seconds.
RATE, BURST = 20, 10
OFFERED_PER_SECOND, SENDING_SECONDS = 10 * RATE, 2.0


async def test_a_burst_at_ten_times_the_rate_admits_no_more_than_the_bucket_holds(
    fresh_sqlite_url: str, bucket_prefix: str | None
) -> None:
    """One client offering 200 requests/s to a 20/s limit (burst 10) gets at most
    burst + rate * elapsed of them admitted, and close to that many."""
    answers: list[httpx.Response] = []
    answered: list[float] = []

    async with limited_api(fresh_sqlite_url, bucket_prefix, rate=RATE, burst=BURST) as (
        http,
        other_key,
    ):

        async def one() -> None:
            answers.append(await http.post(URL, json=SEED))
            answered.append(time.monotonic())

        # The first request of a process is slow (hundreds of ms, before it reaches the
        # limiter): made by another client, it does not eat into this one's time.
        warm = await http.post(URL, json=SEED, headers=other_key)
        assert warm.status_code == 202, warm.text
        first_sent = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for i in range(int(OFFERED_PER_SECOND * SENDING_SECONDS)):
                # On schedule, each in its own task: requests overlap, as from many threads.
                await asyncio.sleep(
                    max(0.0, first_sent + i / OFFERED_PER_SECOND - time.monotonic())
                )
                group.create_task(one())
            last_sent = time.monotonic()
        elapsed = max(answered) - first_sent

    admitted = sum(r.status_code == 202 for r in answers)
    refused = [r for r in answers if r.status_code == 429]
    assert admitted + len(refused) == len(answers), {r.status_code for r in answers}
    budget = BURST + RATE * elapsed
    # Every token was taken inside [first sent, last answered], so the bucket cannot have
    # handed out more than this. One more for the boundary: Redis times refills by its own
    # clock, in whole milliseconds, rather than by this process's monotonic one.
    assert admitted <= budget + 1, (admitted, elapsed)
    # While requests keep coming, each token is taken soon after it is back: at least the
    # tokens of the sending time are used (those refilled while the last answers are
    # written may not be).
    sending = last_sent - first_sent
    assert admitted >= 0.9 * (BURST + RATE * sending), (admitted, sending)
    assert len(answers) / elapsed >= 5 * RATE  # the offered load really was far over the limit
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


@pytest.mark.redis
async def test_repeats_after_the_first_are_answered_from_redis_and_checked_there(
    fresh_sqlite_url: str, redis_prefix: str
) -> None:
    runtime = Runtime(
        settings_for(fresh_sqlite_url, redis_url=SHARED_REDIS_URL, redis_prefix=redis_prefix)
    )
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        first = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k1"})
        key = f"{redis_prefix}idempotency:tenant:{DEFAULT_TENANT}:k1"  # keys are per tenant
        assert await runtime.redis.get(key) is None  # type: ignore[union-attr]
        repeat = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k1"})
        # The first repeat was answered from the database, and copied to Redis.
        assert await runtime.redis.get(key) is not None  # type: ignore[union-attr]
        # The database is now closed: only Redis can answer these.
        await runtime.db.close()
        again = await http.post(URL, json=SEED, headers={"Idempotency-Key": "k1"})
        changed = await http.post(
            URL, json={**SEED, "subject": "Other"}, headers={"Idempotency-Key": "k1"}
        )
    assert again.json() == repeat.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422
    await runtime.close()


@pytest.mark.redis
async def test_with_redis_down_idempotency_falls_back_to_the_database(
    fresh_sqlite_url: str, private_redis: PrivateRedis
) -> None:
    runtime = Runtime(settings_for(fresh_sqlite_url, redis_url=private_redis.url))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
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


async def test_made_up_keys_share_their_address_budget(
    limited: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    """A new invented key per request must not buy a new bucket: key guessing is limited."""
    limited, _ = limited
    codes = [
        (
            await limited.post(URL, json=SEED, headers={"Authorization": f"Bearer hk_guess{i}"})
        ).status_code
        for i in range(8)
    ]
    assert codes == [401] * 5 + [429] * 3
