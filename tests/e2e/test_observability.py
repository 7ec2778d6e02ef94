"""Metrics and JSON logs of real Herald processes: one `herald serve`, or roles apart that
share their metrics through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Deployment
from tests.herald_process import HeraldProcess
from tests.services import free_port
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

URL = "/api/v1/notifications"
Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Scraped:
    """GET /metrics, parsed: {(sample name, sorted labels): value}."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, have), v in scraped.items() if n == name and set(labels.items()) <= set(have)
    )


async def send_and_wait(url: str, sink: SmtpSink, count: int, body: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url) as http:
        ids = []
        for n in range(count):
            response = await http.post(
                URL, json={"recipient": f"u{n}@example.com", "subject": "Hi", "message": body}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    await sink.wait_for(count, timeout=60)
    return ids


async def test_the_series_herald_knows_are_at_zero_before_the_first_event(
    deployment: Deployment,
) -> None:
    """increase() and rate() miss a series that first appears at 1: the first dead letters
    would not alert (HeraldDeadLettersGrowing; tests/unit/test_alert_rules.py)."""
    herald = deployment.process().start()
    try:
        scraped = await scrape(herald.url)
    finally:
        herald.stop()

    def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(pairs.items()))

    expected = [
        ("herald_dead_letters_total", labels(kind="delivery", reason="exhausted", channel="email")),
        ("herald_dead_letters_total", labels(kind="delivery", reason="permanent", channel="email")),
        ("herald_dead_letters_total", labels(kind="message", reason="poison", channel="")),
        ("herald_dead_letters_total", labels(kind="event", reason="refused", channel="")),
        ("herald_deliveries_total", labels(channel="email", provider="smtp", status="SENT")),
        (
            "herald_delivery_attempts_total",
            labels(channel="email", provider="smtp", outcome="RETRY_PENDING"),
        ),
        ("herald_delivery_retries_total", labels(channel="email", provider="smtp")),
        ("herald_daily_cap_skips_total", labels(channel="email")),
    ]
    assert {series: scraped.get(series) for series in expected} == dict.fromkeys(expected, 0.0)


async def test_serve_exports_metrics_and_logs_json_without_bodies(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    herald = deployment.process(HERALD_METRICS_SAMPLE_SECONDS="0.2").start()
    body = f"the body {uuid.uuid4().hex} stays out of the logs"
    try:
        [notification_id] = await send_and_wait(herald.url, smtp_sink, 1, body)
        scraped: Scraped = {}
        worker = f"{_prefix(deployment)}worker.email"
        for _ in range(100):  # the worker's count, the relay's and the sampler catch up
            scraped = await scrape(herald.url)
            # The relay counts an event once its marking commits, which may come after the
            # worker has handled it: wait for the count too.
            if (
                value(scraped, "herald_outbox_pending") == 0
                and value(scraped, "herald_events_published_total") >= 1
                and value(scraped, "herald_messages_handled_total", group=worker)
                # the worker counts an outcome after its commit, maybe after the mail went
                and value(scraped, "herald_deliveries_total", status="SENT")
                and value(scraped, "herald_end_to_end_seconds_count", channel="email")
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        herald.stop()

    sent = {"channel": "email", "provider": "smtp", "status": "SENT"}
    assert value(scraped, "herald_deliveries_total", **sent) == 1
    assert value(scraped, "herald_end_to_end_seconds_count", channel="email") == 1
    assert value(scraped, "herald_notifications_accepted_total") == 1
    assert value(scraped, "herald_http_requests_total", route=URL, code="202") == 1
    # the job: intake routed it (nothing left to decide) and settled the status with it
    assert value(scraped, "herald_events_published_total") >= 1
    assert value(scraped, "herald_circuit_state", provider="smtp") == 0
    assert value(scraped, "herald_build_info") == 1

    events = herald.events()  # every JSON line parses
    assert events, "no JSON log lines"
    assert all({"ts", "level", "logger", "event"} <= e.keys() for e in events)
    [delivered] = [e for e in events if e["event"] == "delivery.sent"]
    assert delivered["notification_id"] == notification_id
    assert (delivered["channel"], delivered["provider"], delivered["attempt"]) == (
        "email",
        "smtp",
        1,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", str(delivered["trace_id"]))
    assert body not in herald.log()


def _prefix(deployment: Deployment) -> str:
    return deployment.env.get("HERALD_TOPIC_PREFIX", "herald.")


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.redis
async def test_roles_apart_share_their_metrics_through_the_multiprocess_directory(
    distributed: Deployment, smtp_sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = {
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
        "HERALD_METRICS_SAMPLE_SECONDS": "0.2",
    }
    worker_metrics = free_port()
    api = distributed.process(("api",), **shared)
    relay = distributed.process(("relay",), **shared)
    worker = distributed.process(("worker",), HERALD_METRICS_PORT=str(worker_metrics), **shared)
    processes: list[HeraldProcess] = [api, relay, worker]
    try:
        api.start()
        relay.start(wait=False)
        worker.start(wait=False)
        worker.wait_for_log("bus.assigned")
        await send_and_wait(api.url, smtp_sink, 5, "hello")
        for _ in range(100):
            from_api = await scrape(api.url)
            # The relay counts an event once its marking commits, which may come after the
            # worker's SENT.
            sent = value(from_api, "herald_deliveries_total", status="SENT")
            if sent == 5 and value(from_api, "herald_events_published_total") >= 5:
                break
            await asyncio.sleep(0.1)
        from_worker = await scrape(f"http://127.0.0.1:{worker_metrics}")
    finally:
        for process in processes:
            process.stop()

    # The API process sends nothing itself: these come from the worker's and relay's files.
    assert value(from_api, "herald_deliveries_total", status="SENT") == 5
    assert value(from_api, "herald_events_published_total") >= 5  # a job each
    assert value(from_api, "herald_notifications_accepted_total") == 5
    # The worker's own endpoint serves the same view, lag included.
    assert value(from_worker, "herald_deliveries_total", status="SENT") == 5
    assert any(name == "herald_consumer_lag" for name, _ in from_worker)
