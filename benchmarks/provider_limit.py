"""The seeds' case: "10k messages/s in, the SMS provider allows 100/s".

    .venv/bin/python benchmarks/provider_limit.py [--limit 100] [--offer 100] [--seconds 1]

`herald serve` (embedded) sends SMS through a local server that speaks Twilio's Messaging API
(tests/fakes/twilio.py), with HERALD_PROVIDER_RATE_LIMITS={"twilio": limit}, and email to a
local SMTP sink. For `seconds`, SMS notifications are offered at `offer` times the limit per
second (batches of 1000, 4 at a time; what Herald does not take as fast is offered as fast as
it takes it). Meanwhile, and for 10 s before as a reference, one email a second probes the
other channels' latency (POST → arrival at the SMTP sink). Reports what the provider saw in
its busiest second, the delivery rate against the limit, what was lost or duplicated, and the
probes' latency before and during the backlog. Writes benchmarks/results/provider_limit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx

from harness import RESULTS, deployment  # first: puts the repo root on sys.path
from loadgen import percentile

# isort: split
from tests.fakes.http_server import running
from tests.fakes.twilio import FakeTwilio

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "bench-twilio-token"
BATCH = 1000


async def offer_sms(http: httpx.AsyncClient, count: int) -> tuple[int, float]:
    """POST `count` SMS notifications in batches, 4 requests at a time; (accepted, seconds)."""
    started, accepted = time.monotonic(), 0
    batches = asyncio.Queue[int]()
    for start in range(0, count, BATCH):
        batches.put_nowait(start)

    async def post() -> None:
        nonlocal accepted
        while not batches.empty():
            start = batches.get_nowait()
            items = [
                {
                    "contacts": {"phone": f"+1415555{i % 10000:04d}"},
                    "channels": ["sms"],
                    "message": f"sms {i}",
                }
                for i in range(start, min(start + BATCH, count))
            ]
            answer = await http.post("/api/v1/notifications/batch", json={"items": items})
            answer.raise_for_status()
            accepted += answer.json()["accepted"]

    await asyncio.gather(*(post() for _ in range(4)))
    return accepted, time.monotonic() - started


async def probe(http: httpx.AsyncClient, sink: Any, until: asyncio.Event) -> list[float]:
    """One email a second until `until`; each one's POST → SMTP arrival, in ms."""
    latencies: list[float] = []
    while not until.is_set():
        sent = time.time()
        answer = await http.post(
            "/api/v1/notifications",
            json={"recipient": "probe@example.com", "subject": "probe", "message": "probe"},
        )
        notification_id = answer.json()["id"]
        for _ in range(3000):
            arrived = [
                m.arrived
                for m in sink.messages()
                if m.message["X-Herald-Notification-Id"] == notification_id
            ]
            if arrived:
                latencies.append((arrived[0] - sent) * 1000)
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - sent)))
    return latencies


async def measure(limit: float, offer: float, seconds: float) -> dict[str, Any]:
    count = int(limit * offer * seconds)
    with running(FakeTwilio(SID, TOKEN)) as twilio:
        assert isinstance(twilio, FakeTwilio)
        providers = {
            "twilio": {
                "type": "twilio",
                "base_url": twilio.url,
                "account_sid": SID,
                "auth_token": TOKEN,
                "from_number": "+15005550006",
                "concurrency": 16,
            }
        }
        env = {
            "HERALD_PROVIDERS": json.dumps(providers),
            "HERALD_PROVIDER_RATE_LIMITS": json.dumps({"twilio": limit}),
            "HERALD_RATE_LIMIT_PER_SECOND": "0",
        }
        with deployment("embedded", env=env) as d:
            async with httpx.AsyncClient(base_url=d.api_url, timeout=120) as http:
                quiet = asyncio.Event()
                reference = asyncio.create_task(probe(http, d.sink, quiet))
                await asyncio.sleep(10)
                quiet.set()
                before = await reference
                done = asyncio.Event()
                during_task = asyncio.create_task(probe(http, d.sink, done))
                accepted, offered_for = await offer_sms(http, count)
                deadline = time.monotonic() + count / limit * 1.5 + 60
                while len(twilio.messages) < accepted and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread's list
                    await asyncio.sleep(0.5)
                done.set()
                during = await during_task
    sent = twilio.messages
    per_second = Counter(int(m.at) for m in sent)
    bodies = Counter(m.body for m in sent)
    span = max(m.at for m in sent) - min(m.at for m in sent) if len(sent) > 1 else 0.0
    seconds_seen = range(min(per_second), max(per_second) + 1) if per_second else range(0)
    series = [per_second.get(second, 0) for second in seconds_seen]
    return {
        "limit_per_second": limit,
        "offered": count,
        "offered_for_seconds": round(offered_for, 2),
        "accepted": accepted,
        "delivered": len(bodies),
        "lost": accepted - len(bodies),
        "duplicates": sum(n - 1 for n in bodies.values() if n > 1),
        "busiest_second": max(per_second.values(), default=0),
        "delivery_rate": round((len(sent) - 1) / span, 2) if span else None,
        # Whole seconds between the first and the last (those two are partial).
        "steady_rate": sorted(series[1:-1])[len(series[1:-1]) // 2] if len(series) > 2 else None,
        "sends_per_second": series,
        "email_probe_before_ms": {
            "p50": round(percentile(before, 50), 1),
            "p99": round(percentile(before, 99), 1),
        },
        "email_probe_during_ms": {
            "p50": round(percentile(during, 50), 1),
            "p99": round(percentile(during, 99), 1),
            "count": len(during),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=100.0, help="SMS per second allowed")
    parser.add_argument("--offer", type=float, default=100.0, help="offered, times the limit")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long it is offered")
    args = parser.parse_args()
    result = asyncio.run(measure(args.limit, args.offer, args.seconds))
    print(json.dumps(result, indent=2))
    rate = result["delivery_rate"]
    within = rate is not None and abs(rate - args.limit) <= 0.05 * args.limit
    print(
        f"busiest second {result['busiest_second']} (limit {args.limit:g}); delivered at "
        f"{rate}/s ({'within' if within else 'NOT within'} 5 % of the limit); "
        f"lost {result['lost']}, duplicates {result['duplicates']}; email probe p99 "
        f"{result['email_probe_before_ms']['p99']} ms before, "
        f"{result['email_probe_during_ms']['p99']} ms during"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "provider_limit.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
