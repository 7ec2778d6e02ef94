"""Physical limits on this machine, to read the other numbers against.

smtp:  how fast the local SMTP sink (the one every benchmark delivers to) accepts messages
       from one client over one reused connection (aiosmtplib, in a process of its own).
kafka: how fast a confluent-kafka Producer alone gets ~500-byte messages acknowledged by a
       Tansu broker (acks=all, idempotent, Herald's producer settings), 8 partitions:
       pipelined (produce all, then flush: the ceiling) and one at a time (produce, flush:
       what a publisher waiting for each acknowledgement gets).

    .venv/bin/python benchmarks/limits.py [--count 2000] [--kafka-count 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from harness import RESULTS, ROOT  # first: puts the repo root on sys.path
from throughput import wait_for

# isort: split
from tests.kafka_broker import TansuBroker
from tests.smtp_sink import SmtpSink

PAYLOAD = json.dumps({"body": "x" * 440, "recipient": "user1@example.com"}).encode()  # ~500 B


def _email(i: int) -> EmailMessage:
    # Shaped like Herald's emails (same headers, similar size), so parsing costs the same.
    mail = EmailMessage()
    mail["From"] = "Herald <herald@example.com>"
    mail["To"] = f"user{i}@example.com"
    mail["Subject"] = f"Load {i}"
    mail["Message-ID"] = f"<limit-{i}@example.com>"
    mail["X-Herald-Notification-Id"] = f"limit-{i}"
    mail.set_content("Load test")
    return mail


async def _send_over_one_connection(host: str, port: int, count: int) -> float:
    async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
        await smtp.send_message(_email(-1))  # warm up: parser, first round trip
        started = time.perf_counter()
        for i in range(count):
            await smtp.send_message(_email(i))
        return time.perf_counter() - started


def smtp_limit(count: int) -> dict[str, object]:
    """The sink runs here, as in the other benchmarks; the client in a process of its own."""
    sink = SmtpSink()
    sink.start()
    try:
        client = [sys.executable, __file__, "--smtp-client", sink.host, str(sink.port)]
        done = subprocess.run(
            [*client, "--count", str(count)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"smtp client failed:\n{done.stderr[-3000:]}")
        seconds = float(done.stdout)
        wait_for(count + 1, sink, 10)
    finally:
        sink.stop()
    return {"messages": count, "seconds": round(seconds, 3), "per_second": round(count / seconds)}


def kafka_limit(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as workdir:
        broker = TansuBroker(Path(workdir)).start()
        try:
            return _produce(broker.bootstrap, count)
        finally:
            broker.stop()


def _produce(bootstrap: str, count: int) -> dict[str, object]:
    topic = "limits"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 8, 1)])[topic].result(15)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        }
    )
    failed: list[str] = []

    def report(err: confluent_kafka.KafkaError | None, _: object) -> None:
        if err is not None:
            failed.append(err.str())

    def send(n: int) -> None:
        for i in range(n):
            while True:
                try:
                    producer.produce(topic, PAYLOAD, key=f"user-{i % 200}", on_delivery=report)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.01)
            producer.poll(0)
        if producer.flush(60) != 0:
            raise RuntimeError("kafka: messages still unacknowledged after 60 s")

    send(100)  # warm up: metadata, producer id, connections to the partition leaders
    started = time.perf_counter()
    send(count)
    seconds = time.perf_counter() - started
    one_by_one = min(count, 300)
    started = time.perf_counter()
    for _ in range(one_by_one):
        send(1)
    sequential = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"kafka: {len(failed)} deliveries failed, e.g. {failed[0]}")
    return {
        "messages": count,
        "bytes": len(PAYLOAD),
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds),
        "sequential_per_second": round(one_by_one / sequential),
    }


def measure_limits(smtp_count: int, kafka_count: int) -> dict[str, dict[str, object]]:
    return {"smtp": smtp_limit(smtp_count), "kafka": kafka_limit(kafka_count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="SMTP messages")
    parser.add_argument("--kafka-count", type=int, default=20000, help="Kafka messages")
    parser.add_argument("--smtp-client", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smtp_client:
        host, port = args.smtp_client
        print(asyncio.run(_send_over_one_connection(host, int(port), args.count)))
        return
    limits = measure_limits(args.count, args.kafka_count)
    print(f"smtp sink, one connection: {limits['smtp']['per_second']:>8} messages/s")
    kafka = limits["kafka"]
    print(f"kafka produce, pipelined:  {kafka['per_second']:>8} messages/s")
    print(f"kafka produce, one by one: {kafka['sequential_per_second']:>8} messages/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "limits.json").write_text(json.dumps(limits, indent=2) + "\n")
    print(f"written to {(RESULTS / 'limits.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
