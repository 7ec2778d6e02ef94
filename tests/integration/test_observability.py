"""The timeline, the metrics and their sampler, over the running pipeline on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from herald.api.providers import shown_to
from herald.clock import utcnow
from herald.ids import uuid7
from herald.observability import metrics
from herald.observability.sampler import Sampler
from herald.pipeline.planning import NotificationSpec
from herald.pipeline.stages.intake import Intake
from herald.pipeline.unit import Units
from herald.runtime import Runtime
from herald.store import circuits
from herald.wakeup import Wakeup
from tests.pipeline_harness import Pipeline, PipelineFactory

DLQ = "/api/v1/dead-letters"


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 when it has no such series yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def counted(name: str, *, above: float, **labels: str) -> None:
    """Wait (up to 5 s) until a metric has gone above a value."""
    deadline = asyncio.get_running_loop().time() + 5
    while sample(name, **labels) <= above:
        assert asyncio.get_running_loop().time() < deadline, "the count never came"
        await asyncio.sleep(0.01)


async def steps(pipeline: Pipeline, notification_id: str) -> list[dict[str, Any]]:
    response = await pipeline.http.get(f"/api/v1/notifications/{notification_id}/timeline")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["notification_id"] == notification_id
    found: list[dict[str, Any]] = body["steps"]
    return found


async def test_timeline_of_a_delivery_retried_until_sent(pipeline: Pipeline) -> None:
    pipeline.sink.fail_data(2)
    accepted = await pipeline.send()
    await pipeline.wait_until_done(accepted["id"])
    timeline = await steps(pipeline, accepted["id"])

    assert [s["step"] for s in timeline] == [
        "accepted",
        "routed",  # at intake: nothing was left to decide (see the timeline through the router)
        "attempt_failed",
        "retry_scheduled",
        "attempt_failed",
        "retry_scheduled",
        "sent",
        "completed",
    ]
    failed = [s for s in timeline if s["step"] == "attempt_failed"]
    assert [s["attempt"] for s in failed] == [1, 2]
    assert all("451" in s["error"] and s["provider"] == "smtp" for s in failed)
    assert [s["attempt"] for s in timeline if s["step"] == "retry_scheduled"] == [2, 3]
    assert timeline[-2]["attempt"] == 3
    assert timeline[-1]["status"] == "SENT"
    times = [s["at"] for s in timeline]
    assert times == sorted(times)


async def test_timeline_through_the_router(pipeline: Pipeline) -> None:
    """A user's notification goes to the router, which applies the user's preferences when
    it is sent: its timeline has the event's publication before the routing."""
    assert (await pipeline.http.put("/api/v1/users/u1", json={"email": "u1@x.io"})).is_success
    accepted = await pipeline.send(recipient=None, user_id="u1", channels=["email"])
    await pipeline.wait_until_done(accepted["id"])
    names = [s["step"] for s in await steps(pipeline, accepted["id"])]
    assert names == ["accepted", "published", "routed", "sent", "completed"]


async def test_timeline_shows_the_dead_letter_and_its_replay(pipeline: Pipeline) -> None:
    pipeline.sink.rcpt_replies["late@example.com"] = "550 5.1.1 No such user"
    accepted = await pipeline.send(recipient="late@example.com")
    await pipeline.wait_until_done(accepted["id"])
    del pipeline.sink.rcpt_replies["late@example.com"]  # the mailbox exists now
    [letter] = await pipeline.dead_letters()
    assert (await pipeline.http.post(f"{DLQ}/{letter.id}/replay")).status_code == 202
    await pipeline.sink.wait_for(1)
    await pipeline.wait_for_delivery(accepted["id"], lambda d: d["status"] == "SENT")

    for _ in range(200):  # the status consumer settles the notification again
        timeline = await steps(pipeline, accepted["id"])
        if timeline[-1]["step"] == "completed" and timeline[-1]["status"] == "SENT":
            break
        await asyncio.sleep(0.05)
    names = [s["step"] for s in timeline]
    assert names[:4] == ["accepted", "routed", "attempt_failed", "dead_lettered"]
    assert names[-3:] == ["replayed", "sent", "completed"]
    dead = timeline[3]
    assert (dead["status"], dead["error_class"]) == ("permanent", "PermanentDeliveryError")
    assert letter.id in dead["detail"]


async def test_timeline_of_an_unknown_notification_is_404(pipeline: Pipeline) -> None:
    response = await pipeline.http.get("/api/v1/notifications/nope/timeline")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_delivery_metrics_count_attempts_retries_and_dead_letters(
    pipeline: Pipeline,
) -> None:
    email = {"channel": "email", "provider": "smtp"}
    before = {
        "sent": sample("herald_deliveries_total", status="SENT", **email),
        "dead": sample("herald_deliveries_total", status="DEAD_LETTERED", **email),
        "retries": sample("herald_delivery_retries_total", **email),
        "e2e": sample("herald_end_to_end_seconds_count", channel="email"),
        "calls": sample("herald_provider_call_seconds_count", outcome="transient", **email),
        "letters": sample(
            "herald_dead_letters_total", kind="delivery", reason="permanent", channel="email"
        ),
        "accepted": sample("herald_notifications_accepted_total"),
    }
    pipeline.sink.fail_data(1)
    pipeline.sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    ok = await pipeline.send()
    gone = await pipeline.send(recipient="gone@example.com")
    await pipeline.wait_until_done(ok["id"])
    await pipeline.wait_until_done(gone["id"])
    # The worker counts an outcome after its transaction commits, and a status read may land
    # in between: wait for the last two counts before checking every one exactly.
    await counted("herald_deliveries_total", above=before["sent"], status="SENT", **email)
    await counted("herald_deliveries_total", above=before["dead"], status="DEAD_LETTERED", **email)

    assert sample("herald_notifications_accepted_total") - before["accepted"] == 2
    assert sample("herald_deliveries_total", status="SENT", **email) - before["sent"] == 1
    assert sample("herald_deliveries_total", status="DEAD_LETTERED", **email) - before["dead"] == 1
    assert sample("herald_delivery_retries_total", **email) - before["retries"] == 1
    assert sample("herald_end_to_end_seconds_count", channel="email") - before["e2e"] == 1
    transient = sample("herald_provider_call_seconds_count", outcome="transient", **email)
    assert transient - before["calls"] == 1
    letters = sample(
        "herald_dead_letters_total", kind="delivery", reason="permanent", channel="email"
    )
    assert letters - before["letters"] == 1


async def test_metrics_endpoint_serves_request_counts_by_route_template(
    pipeline: Pipeline,
) -> None:
    accepted = await pipeline.send()
    await pipeline.get(accepted["id"])
    response = await pipeline.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = {
        (s.labels["method"], s.labels["route"], s.labels["code"])
        for s in families["herald_http_requests"].samples
        if s.name == "herald_http_requests_total"
    }
    assert ("POST", "/api/v1/notifications", "202") in requests
    # The template, not the id: one series however many notifications are read.
    assert ("GET", "/api/v1/notifications/{notification_id}", "200") in requests
    assert not any(accepted["id"] in route for _, route, _ in requests)


async def test_sampler_reports_the_dead_letter_depth_and_lag(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(metrics_sample_seconds=3600) as pipeline:
        rt = pipeline.runtime
        pipeline.sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
        gone = await pipeline.send(recipient="gone@example.com")
        await pipeline.wait_until_done(gone["id"])
        group = f"{rt.topics.prefix}worker.email"
        sampler = Sampler(
            rt.db,
            rt.bus,
            interval=1,
            stored_state=True,
            groups={group: [rt.topics.deliveries("email")]},
        )
        await sampler.sample_once()
        assert sample("herald_dead_letters_pending", kind="delivery", channel="email") == 1

        [letter] = await pipeline.dead_letters()
        assert (await pipeline.http.delete(f"{DLQ}/{letter.id}")).status_code == 204
        await sampler.sample_once()
        # A queue emptied reads 0; it does not keep its last value.
        assert sample("herald_dead_letters_pending", kind="delivery", channel="email") == 0
        lags = [
            s.value
            for metric in REGISTRY.collect()
            if metric.name == "herald_consumer_lag"
            for s in metric.samples
            if s.labels["group"] == group
        ]
        assert lags, "no lag series for the worker's group"
        assert all(lag >= 0 for lag in lags)


async def test_sampler_reports_the_outbox_backlog(runtime: Runtime) -> None:
    """Nothing relays here: what was accepted waits in the outbox (as on Kafka: the embedded
    bus would take it in the transaction itself)."""
    sampler = Sampler(runtime.db, runtime.bus, interval=1, stored_state=True, groups={})
    intake = Intake(Units(runtime.db, Wakeup()), runtime.topics, idempotency_ttl=60)
    for n in range(3):
        await intake.submit(
            NotificationSpec.email(f"u{n}@example.com", "s", "b"),
            lambda record: {"id": record.id},
        )
    await asyncio.sleep(0.05)
    await sampler.sample_once()
    assert sample("herald_outbox_pending") == 3
    assert sample("herald_outbox_oldest_age_seconds") >= 0.05


async def test_a_workers_rate_limit_waits_are_stored_beside_its_circuits(
    runtime: Runtime,
) -> None:
    """Metrics are per process; the console reads each worker's waits from the store."""
    provider, now = f"limited-{uuid7()}", utcnow()  # counters live as long as the process

    def circuit(worker: str, state: str = "closed") -> circuits.CircuitRecord:
        return circuits.CircuitRecord(provider, worker, "sms", state, 0, None, now)

    async with runtime.db.write() as conn:
        for worker in ("w1", "w2"):
            await circuits.save(conn, circuit(worker))
    metrics.rate_limit_waits.labels(provider).inc(3)
    metrics.rate_limit_wait_seconds.labels(provider).inc(1.5)
    sampler = Sampler(
        runtime.db, runtime.bus, interval=1, stored_state=False, groups={}, worker="w1"
    )
    await sampler.sample_once()
    commits = runtime.db.commits
    await sampler.sample_once()  # nothing new: nothing written
    assert runtime.db.commits == commits
    async with runtime.db.write() as conn:
        await circuits.save(conn, circuit("w1", "open"))  # a state change keeps the waits
        stored = {r.worker: r for r in await circuits.list_all(conn) if r.provider == provider}
    assert (stored["w1"].rate_limit_waits, stored["w1"].rate_limit_wait_seconds) == (3, 1.5)
    assert stored["w1"].state == "open"
    assert (stored["w2"].rate_limit_waits, stored["w2"].rate_limit_wait_seconds) == (0, 0.0)
    (summed,) = [p for p in shown_to("another-tenant", list(stored.values()))]
    assert (summed.worker, summed.rate_limit_waits, summed.state) == (None, 3, "open")
