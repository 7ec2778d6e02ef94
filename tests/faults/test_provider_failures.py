"""The mail relay misbehaves; `herald serve` runs as a real process, on both deployments."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise

import httpx
import pytest

from herald.reliability.backoff import Backoff
from tests.conftest import Deployment
from tests.faults.counts import count, post_all, settle
from tests.herald_process import HeraldProcess
from tests.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

FAST_RETRIES = {
    "HERALD_RETRY_BASE_SECONDS": "0.2",
    "HERALD_RETRY_MAX_SECONDS": "1",
    "HERALD_RETRY_MAX_ATTEMPTS": "8",
    "HERALD_CIRCUIT_FAILURE_THRESHOLD": "3",
    "HERALD_CIRCUIT_RESET_SECONDS": "0.5",
    "HERALD_CIRCUIT_MAX_RESET_SECONDS": "1",
    "HERALD_SMTP_TIMEOUT_SECONDS": "2",
    "HERALD_DELIVERY_LEASE_SECONDS": "5",
    "HERALD_RATE_LIMIT_PER_SECOND": "0",
}


def mails(recipients: list[str]) -> list[dict[str, str]]:
    return [{"recipient": r, "subject": f"To {r}", "message": "hello"} for r in recipients]


@pytest.fixture
def herald(deployment: Deployment) -> Iterator[HeraldProcess]:
    process = deployment.process(**FAST_RETRIES).start()
    yield process
    process.stop()


async def test_smtp_server_down_for_a_while(herald: HeraldProcess, smtp_sink: SmtpSink) -> None:
    smtp_sink.stop()
    async with httpx.AsyncClient(base_url=herald.url) as http:
        ids = await post_all(http, mails([f"user{i}@example.com" for i in range(20)]))
        await asyncio.sleep(3)  # failures open the circuit; probes keep failing
        providers = (await http.get("/api/v1/providers")).json()
        smtp_sink.start()
        views = await settle(http, ids)
    counts = count(smtp_sink, views)
    smtp = [p for p in providers if p["provider"] == "smtp"]
    print(f"\n{counts} circuit_while_down={[p['state'] for p in smtp]}")
    assert (counts.accepted, counts.delivered, counts.lost, counts.dead_lettered) == (20, 20, 0, 0)
    assert {v["status"] for v in views.values()} == {"SENT"}
    histories = [v["deliveries"][0]["history"] for v in views.values()]
    failed = [a for h in histories for a in h if a["outcome"] == "RETRY_PENDING"]
    assert failed, "the outage should show in the attempt history"
    assert all(a["error_class"] == "TransientDeliveryError" for a in failed)
    assert smtp[0]["state"] in ("open", "half_open")


async def test_a_rejected_recipient_is_dead_lettered_after_one_attempt(
    herald: HeraldProcess, smtp_sink: SmtpSink
) -> None:
    rejected = [f"gone{i}@example.com" for i in range(5)]
    for address in rejected:
        smtp_sink.rcpt_replies[address] = "550 5.1.1 No such user"
    async with httpx.AsyncClient(base_url=herald.url) as http:
        ids = await post_all(http, mails(rejected + [f"ok{i}@example.com" for i in range(5)]))
        views = await settle(http, ids)
        letters = (await http.get("/api/v1/dead-letters", params={"reason": "permanent"})).json()
    counts = count(smtp_sink, views)
    print(f"\n{counts}")
    assert (counts.delivered, counts.dead_lettered, counts.lost) == (5, 5, 0)
    for view in views.values():
        delivery = view["deliveries"][0]
        if view["recipient"] in rejected:
            assert (view["status"], delivery["attempts"], len(delivery["history"])) == (
                "FAILED",
                1,
                1,
            )
    assert len(letters["items"]) == 5


async def test_retries_run_out_at_the_configured_attempts_with_backoff_between(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    smtp_sink.fail_data(10_000)  # 451 for ever: transient every time
    herald = deployment.process(
        **{
            **FAST_RETRIES,
            "HERALD_RETRY_MAX_ATTEMPTS": "4",
            "HERALD_CIRCUIT_FAILURE_THRESHOLD": "1000",  # this test is about retries alone
        }
    ).start()
    try:
        async with httpx.AsyncClient(base_url=herald.url) as http:
            ids = await post_all(http, mails([f"user{i}@example.com" for i in range(3)]))
            views = await settle(http, ids)
    finally:
        herald.stop()
    counts = count(smtp_sink, views)
    print(f"\n{counts}")
    assert (counts.delivered, counts.dead_lettered, counts.lost) == (0, 3, 0)
    backoff = Backoff(base=0.2, cap=1.0)
    for view in views.values():
        history = view["deliveries"][0]["history"]
        assert [a["outcome"] for a in history] == ["RETRY_PENDING"] * 3 + ["DEAD_LETTERED"]
        for n, (before, after) in enumerate(pairwise(history), start=1):
            scheduled = _at(before["retry_at"]) - _at(before["finished_at"])
            assert 0 <= scheduled.total_seconds() <= backoff.ceiling(n) + 0.01  # full jitter
            assert _at(after["started_at"]) >= _at(before["retry_at"])  # never early


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_replaying_after_the_fix_delivers_once_even_when_asked_twice(
    herald: HeraldProcess, smtp_sink: SmtpSink
) -> None:
    smtp_sink.rcpt_replies["moved@example.com"] = "550 5.1.1 No such user"
    async with httpx.AsyncClient(base_url=herald.url) as http:
        [notification_id] = await post_all(http, mails(["moved@example.com"]))
        await settle(http, [notification_id])
        [letter] = (await http.get("/api/v1/dead-letters")).json()["items"]
        del smtp_sink.rcpt_replies["moved@example.com"]  # the mailbox exists again
        replies = await asyncio.gather(
            *(http.post(f"/api/v1/dead-letters/{letter['id']}/replay") for _ in range(2))
        )
        for _ in range(300):
            view = (await http.get(f"/api/v1/notifications/{notification_id}")).json()
            if view["status"] == "SENT":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # a second send would arrive by now
    assert sorted(r.json()["replayed"] for r in replies) == [False, True]
    assert view["status"] == "SENT"
    assert [m.notification_id for m in smtp_sink.messages()] == [notification_id]


async def test_mail_resumes_soon_after_the_relay_is_back_not_after_the_circuits_pause(
    deployment: Deployment, smtp_sink: SmtpSink
) -> None:
    """The circuit's pause is long (60 s, doubling); the relay comes back well within it.
    Herald checks every few seconds whether the relay greets again and probes at once."""
    herald = deployment.process(
        **{
            **FAST_RETRIES,
            "HERALD_CIRCUIT_RESET_SECONDS": "60",
            "HERALD_CIRCUIT_MAX_RESET_SECONDS": "300",
            "HERALD_RETRY_MAX_ATTEMPTS": "20",
        }
    ).start()
    smtp_sink.stop()
    try:
        async with httpx.AsyncClient(base_url=herald.url) as http:
            ids = await post_all(http, mails([f"user{i}@example.com" for i in range(10)]))
            for _ in range(300):
                providers = (await http.get("/api/v1/providers")).json()
                if any(p["provider"] == "smtp" and p["state"] == "open" for p in providers):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the circuit never opened: {providers}")
            smtp_sink.start()
            back = asyncio.get_running_loop().time()
            views = await settle(http, ids, timeout=30)  # half the circuit's pause
            took = asyncio.get_running_loop().time() - back
    finally:
        herald.stop()
    counts = count(smtp_sink, views)
    print(f"\n{counts} delivered {took:.1f}s after the relay was back")
    assert (counts.delivered, counts.lost) == (10, 0)
