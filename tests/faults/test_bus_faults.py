"""Messages that should not be there: duplicates and poison, injected onto each deployment's bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from herald.bus.base import Bus, OutgoingMessage
from herald.bus.embedded import EmbeddedBus
from herald.bus.kafka import KafkaBus
from herald.bus.topics import Topics
from herald.store.database import Database
from tests.conftest import Deployment
from tests.faults.counts import count, post_all, settle
from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow


@pytest.fixture
def herald(deployment: Deployment) -> Iterator[HeraldProcess]:
    process = deployment.process(HERALD_RATE_LIMIT_PER_SECOND="0").start()
    yield process
    process.stop()


@pytest.fixture
async def bus(deployment: Deployment) -> AsyncIterator[tuple[Bus, Topics]]:
    """The deployment's bus, opened from this test process as another producer."""
    env = deployment.env
    topics = Topics(env.get("HERALD_TOPIC_PREFIX", "herald."))
    db = None
    backend: Bus
    if deployment.name == "embedded":
        db = Database(deployment.database_url)
        backend = EmbeddedBus(db)
    else:
        backend = KafkaBus({"bootstrap.servers": env["HERALD_KAFKA_BOOTSTRAP_SERVERS"]})
    await backend.start()
    yield backend, topics
    await backend.close()
    if db is not None:
        await db.close()


def job_of(view: dict[str, object], topics: Topics) -> OutgoingMessage:
    """The delivery job the router made for this notification, rebuilt byte for byte."""
    from herald.domain.messages import Content, DeliveryJob
    from herald.pipeline.envelope import envelope

    [delivery] = view["deliveries"]  # type: ignore[misc]
    job = DeliveryJob(
        delivery_id=delivery["id"],
        notification_id=str(view["id"]),
        channel="email",
        recipient=delivery["recipient"],
        user_key=delivery["recipient"],
        content=Content(subject=str(view["subject"]), body="hello"),
    )
    return envelope(topics.deliveries("email"), job.user_key, job)


async def test_duplicated_jobs_send_one_email(
    herald: HeraldProcess, smtp_sink: SmtpSink, bus: tuple[Bus, Topics]
) -> None:
    backend, topics = bus
    async with httpx.AsyncClient(base_url=herald.url) as http:
        ids = await post_all(
            http,
            [
                {"recipient": f"u{i}@example.com", "subject": "S", "message": "hello"}
                for i in range(10)
            ],
        )
        views = await settle(http, ids)
        # Every job again, twice: as a redelivery after a crash or a replayed batch would.
        await backend.publish([job_of(v, topics) for v in views.values()] * 2)
        # And a marker behind them for each user, to know the duplicates were consumed.
        markers = await post_all(
            http,
            [
                {"recipient": f"u{i}@example.com", "subject": "M", "message": "hi"}
                for i in range(10)
            ],
        )
        views |= await settle(http, markers)
    counts = count(smtp_sink, views)
    print(f"\n{counts}")
    assert (counts.accepted, counts.delivered, counts.duplicated, counts.lost) == (20, 20, 0, 0)
    assert len(smtp_sink.messages()) == 20


async def test_a_poison_message_is_dead_lettered_and_the_rest_of_its_partition_flows(
    herald: HeraldProcess, smtp_sink: SmtpSink, bus: tuple[Bus, Topics]
) -> None:
    backend, topics = bus
    await backend.publish(
        [OutgoingMessage(topics.deliveries("email"), "victim@example.com", b"\xff\xfe not a job")]
    )
    async with httpx.AsyncClient(base_url=herald.url) as http:
        # Same key, so the same partition, behind the poison.
        ids = await post_all(
            http,
            [
                {"recipient": "victim@example.com", "subject": f"n{i}", "message": "x"}
                for i in range(5)
            ],
        )
        views = await settle(http, ids)
        for _ in range(100):
            letters = (await http.get("/api/v1/dead-letters", params={"reason": "poison"})).json()
            if letters["items"]:
                break
            await asyncio.sleep(0.1)
        detail = (await http.get(f"/api/v1/dead-letters/{letters['items'][0]['id']}")).json()
    counts = count(smtp_sink, views)
    print(f"\n{counts}")
    assert (counts.delivered, counts.lost) == (5, 0)
    assert detail["payload_encoding"] == "base64"
    assert detail["source"].startswith(topics.deliveries("email"))
    assert json.dumps(detail)  # inspectable as JSON
