"""Load generator, run as its own process: POST notifications at a fixed concurrency.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --count 2000 --concurrency 32
    python benchmarks/loadgen.py --url ... --count 20000 --batch 100   # POST .../batch

Prints one JSON line: when the first request started and the last finished (time.time()),
how many were accepted, and the latency percentiles of the POSTs. With --accepted-out FILE it
also writes {notification id: [time.time() the POST was sent, time.time() its 202 was read]},
so a caller can time each notification to the email's arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def notification(i: int, users: int) -> dict[str, str]:
    return {
        "user_id": f"user-{i % users}",
        "recipient": f"user{i % users}@example.com",
        "subject": f"Load {i}",
        "message": "Load test",
    }


async def run(
    url: str,
    count: int,
    concurrency: int,
    users: int,
    accepted_at: dict[str, tuple[float, float]] | None = None,
    batch: int = 0,
) -> dict[str, object]:
    """`accepted_at`, if given, gets {notification id: (time.time() sent, of its 202)}.
    With ``batch``, each request is POST /api/v1/notifications/batch of that many items."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(0, count, batch or 1):
        queue.put_nowait(i)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    retries = [0]
    run_id = uuid.uuid4().hex[:8]

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if batch:
                path = "/api/v1/notifications/batch"
                items = range(i, min(i + batch, count))
                body: dict[str, object] = {"items": [notification(n, users) for n in items]}
            else:
                path, body, items = "/api/v1/notifications", notification(i, users), range(1)
            # As a careful client would: a key per request, so a retry after a dropped
            # connection cannot create a duplicate.
            headers = {"Idempotency-Key": f"{run_id}-{i}"}
            sent, started = time.time(), time.perf_counter()
            for attempt in range(4):
                try:
                    response = await http.post(path, json=body, headers=headers)
                    break
                except httpx.TransportError:
                    retries[0] += 1
                    if attempt == 3:
                        raise
            latencies.append(time.perf_counter() - started)
            if response.status_code != 202:
                code = str(response.status_code)
                failures[code] = failures.get(code, 0) + len(items)
            elif batch:
                refused = response.json()["refused"]
                if refused:
                    failures["422"] = failures.get("422", 0) + refused
            elif accepted_at is not None:
                accepted_at[response.json()["id"]] = (sent, time.time())

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        begin = time.time()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        end = time.time()
    return {
        "started": begin,
        "finished": end,
        "accepted": count - sum(failures.values()),
        "failures": failures,
        "transport_retries": retries[0],
        "post_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--batch", type=int, default=0, help="items per batch request [single]")
    parser.add_argument(
        "--accepted-out", type=Path, help="write {id: [time sent, time of the 202]} here"
    )
    args = parser.parse_args()
    accepted_at: dict[str, tuple[float, float]] = {}
    report = asyncio.run(
        run(args.url, args.count, args.concurrency, args.users, accepted_at, args.batch)
    )
    if args.accepted_out is not None:
        args.accepted_out.write_text(json.dumps(accepted_at))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
