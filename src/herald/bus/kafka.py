"""The Kafka bus: confluent-kafka (librdkafka) against any Kafka-protocol broker.

Producer: idempotent, ``acks=all``, Kafka's Java partitioner (murmur2) so a key lands on the
same partition as with Java clients; ``publish`` returns once the broker acknowledged every
message. Consumers: one group per stage, manual commits, cooperative-sticky rebalancing.

librdkafka is thread-safe, but a consumer is driven from one dedicated thread here: polls,
commits, pause/resume and rebalance callbacks never race. On a revocation the callback (on
that thread) asks the runner on the event loop to finish the partitions' in-flight work and
commits what it returns before the partitions move on.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from datetime import UTC, datetime
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from herald.bus.base import Bus, Consumer, Message, OutgoingMessage, Position, TopicPartition
from herald.clock import utcnow
from herald.errors import BusError, BusUnavailableError
from herald.observability.logging import get_logger

log = get_logger(__name__)

ClientConfig = Mapping[str, str | int | float | bool]

# Errors that mean "the cluster is unreachable", not "this message is unacceptable".
_UNAVAILABLE = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    # The producer or the topics are gone (a broker replaced with its storage): the bus needs
    # repair (a new producer, topics created again), the messages are fine.
    KafkaError._FATAL,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
# Consumers notice topics created again (after a broker lost them) within this time.
_METADATA_REFRESH_MS = 10_000
# Leaving the group waits for a rebalance in progress; a stop does not wait longer than this.
_CLOSE_TIMEOUT = 5.0


def bus_error(err: KafkaError) -> BusError:
    if err.code() in _UNAVAILABLE or err.retriable():
        return BusUnavailableError(f"kafka: {err.str()}")
    return BusError(f"kafka: {err.str()}")


def _settle(future: asyncio.Future[None], error: BusError | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class KafkaBus(Bus):
    name = "kafka"
    transactional = False

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        partitions: int = 6,
        replication_factor: int = -1,
        session_timeout_ms: int = 10_000,
        fetch_wait_max_ms: int = 100,
        publish_timeout: float = 20.0,
        drain_timeout: float = 20.0,
    ) -> None:
        self.client_config = dict(client_config)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self.fetch_wait_max_ms = fetch_wait_max_ms
        self.publish_timeout = publish_timeout
        self.drain_timeout = drain_timeout
        self._producer: confluent_kafka.Producer | None = None
        self._admin: AdminClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._poller: threading.Thread | None = None
        self._known_topics: set[str] = set()
        self._recheck_topics = False  # after the bus was unreachable: topics may be gone
        self._producer_broken: str | None = None  # librdkafka reported a fatal error

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._admin = AdminClient(self.client_config)
        self._producer = self._new_producer()
        # Delivery reports are served by poll(); a thread keeps calling it.
        self._poller = threading.Thread(
            target=self._serve_delivery_reports, name="kafka-producer", daemon=True
        )
        self._poller.start()

    def _new_producer(self) -> confluent_kafka.Producer:
        return confluent_kafka.Producer(
            {
                **self.client_config,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "delivery.timeout.ms": int(self.publish_timeout * 1000),
                "topic.metadata.refresh.interval.ms": _METADATA_REFRESH_MS,
                "error_cb": self._producer_error,
            }
        )

    def _producer_error(self, err: KafkaError) -> None:
        if err.fatal():
            # E.g. a new broker that never heard of this idempotent producer: it must go.
            self._producer_broken = err.str()
        self._client_error(err)

    async def _replace_producer(self) -> None:
        old, self._producer = self._producer, self._new_producer()
        log.warning("kafka.producer_replaced", reason=self._producer_broken)
        self._producer_broken = None
        if old is not None:
            # Purged messages report failure, which settles whoever still waits on them.
            await asyncio.to_thread(old.purge)
            await asyncio.to_thread(old.flush, 1)

    def _serve_delivery_reports(self) -> None:
        while not self._closing.is_set():
            producer = self._producer  # replaced after a fatal error
            if producer is None:
                return
            try:
                producer.poll(0.1)
            except KafkaException as exc:
                # poll() raises the producer's fatal error; this thread must outlive it.
                if exc.args[0].fatal():
                    self._producer_broken = exc.args[0].str()
                log.warning("kafka.producer_poll_failed", error=exc.args[0].str())
                time.sleep(0.1)

    async def close(self) -> None:
        if self._producer is not None:
            remaining = await asyncio.to_thread(self._producer.flush, 10)
            if remaining:
                log.warning("kafka.unflushed_at_close", messages=remaining)
        self._closing.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join, 5)
        # Dropping the last reference destroys the librdkafka clients and their threads.
        self._producer = self._admin = None

    @staticmethod
    def _client_error(err: KafkaError) -> None:
        log.warning("kafka.client_error", error=err.str(), fatal=err.fatal())

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("KafkaBus.start() was not called")
        return self._admin

    # -- Bus ----------------------------------------------------------------------------

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self.admin.list_topics, timeout=2)
        except KafkaException as exc:
            raise BusUnavailableError(f"kafka: {exc}") from exc

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        await asyncio.to_thread(self._ensure_topics, list(topics))

    def _ensure_topics(self, topics: list[str]) -> None:
        self._known_topics.update(topics)
        try:
            existing = self.admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise BusUnavailableError(f"kafka: {exc}") from exc
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [NewTopic(t, self.partitions, self.replication_factor) for t in missing]
            for topic, future in self.admin.create_topics(new, operation_timeout=10).items():
                try:
                    future.result(15)
                    log.info("kafka.topic_created", topic=topic, partitions=self.partitions)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise bus_error(exc.args[0]) from exc
        # Consumers that subscribe before a topic is visible may never get its partitions.
        deadline = time.monotonic() + 15
        while True:
            metadata = self.admin.list_topics(timeout=5).topics
            if all(t in metadata and metadata[t].partitions for t in topics):
                return
            if time.monotonic() > deadline:
                raise BusUnavailableError(f"kafka: topics {topics} did not appear")
            time.sleep(0.1)

    async def _publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is None or self._loop is None:
            raise RuntimeError("KafkaBus.start() was not called")
        if self._producer_broken is not None:
            await self._replace_producer()
        if self._recheck_topics:
            # Create them as configured before a broker auto-creates them some other way.
            await self.ensure_topics(sorted(self._known_topics | {m.topic for m in messages}))
            self._recheck_topics = False
        try:
            await self._produce_all(messages)
        except BusUnavailableError as exc:
            self._recheck_topics = True
            # An idempotent producer that lost its broker can be stuck for good: a new, empty
            # broker answers UNKNOWN_PRODUCER_ID to every retry, which librdkafka does not always
            # treat as fatal. The next attempt starts with a fresh producer id instead.
            self._producer_broken = self._producer_broken or str(exc)
            raise

    async def _produce_all(self, messages: Sequence[OutgoingMessage]) -> None:
        assert self._producer is not None
        assert self._loop is not None
        loop = self._loop
        futures: list[asyncio.Future[None]] = []
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()

            def report(
                err: KafkaError | None, _msg: Any, future: asyncio.Future[None] = future
            ) -> None:
                loop.call_soon_threadsafe(_settle, future, None if err is None else bus_error(err))

            while True:
                try:
                    self._producer.produce(
                        message.topic,
                        value=message.value,
                        key=message.key,
                        headers=list(message.headers.items()),
                        on_delivery=report,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    if exc.args[0].fatal() or exc.args[0].code() == KafkaError._FATAL:
                        self._producer_broken = exc.args[0].str()
                    raise bus_error(exc.args[0]) from exc
            futures.append(future)
        try:
            async with asyncio.timeout(self.publish_timeout + 5):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            raise BusUnavailableError("kafka: no acknowledgement in time") from exc
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            unavailable = [e for e in errors if isinstance(e, BusUnavailableError)]
            raise (unavailable or errors)[0]

    async def positions(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, Position]:
        return await asyncio.to_thread(self._positions, group, list(topics))

    def _positions(self, group: str, topics: list[str]) -> dict[TopicPartition, Position]:
        """Committed offsets (OffsetFetch) against the high watermarks (ListOffsets)."""
        try:
            metadata = self.admin.list_topics(timeout=5).topics
            partitions = [
                confluent_kafka.TopicPartition(t, p)
                for t in topics
                if t in metadata
                for p in metadata[t].partitions
            ]
            if not partitions:
                return {}
            request = confluent_kafka.ConsumerGroupTopicPartitions(group, partitions)
            committed = self.admin.list_consumer_group_offsets([request])[group].result(10)
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            ends = self.admin.list_offsets(dict.fromkeys(partitions, latest), request_timeout=10)
        except KafkaException as exc:
            raise bus_error(exc.args[0]) from exc
        done = {(tp.topic, tp.partition): tp.offset for tp in committed.topic_partitions}
        positions = {}
        for tp, future in ends.items():
            end = future.result(10).offset
            start = max(done.get((tp.topic, tp.partition), 0), 0)  # negative: nothing committed
            positions[TopicPartition(tp.topic, tp.partition)] = Position(start, end)
        return positions

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self, group, list(topics))


def _message(raw: confluent_kafka.Message) -> Message:
    key = raw.key()
    raw_headers = raw.headers() or []
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = {k: v.decode() if isinstance(v, bytes) else str(v or "") for k, v in pairs}
    kind, millis = raw.timestamp()
    timestamp = (
        utcnow()
        if kind == confluent_kafka.TIMESTAMP_NOT_AVAILABLE
        else datetime.fromtimestamp(millis / 1000, UTC)
    )
    topic, partition, offset = raw.topic(), raw.partition(), raw.offset()
    # A message that is not an error always has all three.
    assert topic is not None
    assert partition is not None
    assert offset is not None
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode() if isinstance(key, bytes) else key,
        value=raw.value() or b"",
        headers=headers,
        timestamp=timestamp,
    )


class _ConsumerThread(Executor):
    """One daemon thread that runs the calls given to it in order.

    Not a ThreadPoolExecutor: the interpreter waits for those at exit, and a librdkafka call
    that does not return (leaving a group whose rebalance never completes) would then keep a
    stopping worker alive, holding its partitions."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, functools.partial(fn, **kwargs), args))
        return future

    def _run(self) -> None:
        while True:
            future, fn, args = self._calls.get()
            if fn is _STOP:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._calls.put((Future(), _STOP, ()))
        if wait:
            self._thread.join()


def _STOP() -> None:
    """The call that ends a _ConsumerThread."""


class KafkaConsumer(Consumer):
    def __init__(self, bus: KafkaBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._thread = _ConsumerThread(f"kafka-{group}")
        self._consumer: confluent_kafka.Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Shared between the event loop and the consumer thread: only ever replaced, never
        # changed in place, so a reader sees one whole version or the next.
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._want_paused: frozenset[TopicPartition] = frozenset()
        self._paused: frozenset[TopicPartition] = frozenset()

    async def _on_thread(self, fn: Any, *args: Any) -> Any:
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._thread, fn, *args)

    # -- on the consumer thread ----------------------------------------------------------

    def _client(self) -> confluent_kafka.Consumer:
        if self._consumer is None:
            self._consumer = confluent_kafka.Consumer(
                {
                    **self.bus.client_config,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": self.bus.session_timeout_ms,
                    "heartbeat.interval.ms": max(100, self.bus.session_timeout_ms // 3),
                    "topic.metadata.refresh.interval.ms": _METADATA_REFRESH_MS,
                    "fetch.wait.max.ms": self.bus.fetch_wait_max_ms,
                    "error_cb": KafkaBus._client_error,
                }
            )
            self._consumer.subscribe(
                self.topics,
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )
        return self._consumer

    def _poll(self, max_messages: int, timeout: float) -> list[Message]:
        client = self._client()
        pause = (self._want_paused & self._assignment) - self._paused
        resume = self._paused - self._want_paused
        if pause:
            client.pause([confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in pause])
        if resume:
            client.resume([confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in resume])
        self._paused = (self._paused | pause) - resume
        # consume() waits until it has all num_messages or the timeout ends: take what is
        # fetched already, and only when that is nothing, wait for the first message.
        raws = client.consume(num_messages=max(1, max_messages), timeout=0)
        if not raws and timeout > 0:
            raws = client.consume(num_messages=1, timeout=timeout)
            if raws and max_messages > 1:
                raws += client.consume(num_messages=max_messages - 1, timeout=0)
        messages = []
        for raw in raws:
            error = raw.error()
            if error is None:
                messages.append(_message(raw))
            elif error.fatal():
                raise BusError(f"kafka consumer {self.group}: {error.str()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka.consume_error", group=self.group, error=error.str())
        # A rebalance inside consume() may have revoked partitions whose messages were already
        # fetched into this batch: they belong to the new owner now.
        assignment = self._assignment
        return [m for m in messages if m.tp in assignment]

    def _assigned(self, _client: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._assignment = self._assignment | {
            TopicPartition(p.topic, p.partition) for p in partitions
        }
        log.info(
            "bus.assigned", group=self.group, added=len(partitions), total=len(self._assignment)
        )

    def _revoked(self, client: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        tps = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        offsets: dict[TopicPartition, int] = {}
        if self.listener is not None and self._loop is not None and tps:
            pending = asyncio.run_coroutine_threadsafe(self.listener.revoked(tps), self._loop)
            try:
                offsets = pending.result(self.bus.drain_timeout + 5)
            except Exception:
                log.exception("kafka.revoke_drain_failed", group=self.group)
        if offsets:
            try:
                client.commit(
                    offsets=[
                        confluent_kafka.TopicPartition(t.topic, t.partition, o)
                        for t, o in offsets.items()
                    ],
                    asynchronous=False,
                )
            except KafkaException as exc:
                log.warning("kafka.revoke_commit_failed", group=self.group, error=str(exc))
        self._forget(tps)
        log.info("bus.revoked", group=self.group, removed=len(tps), committed=len(offsets))

    def _lost(self, _client: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        tps = frozenset(TopicPartition(p.topic, p.partition) for p in partitions)
        if self.listener is not None and self._loop is not None and tps:
            pending = asyncio.run_coroutine_threadsafe(self.listener.lost(tps), self._loop)
            try:
                pending.result(10)
            except Exception:
                log.exception("kafka.lost_handling_failed", group=self.group)
        self._forget(tps)
        log.warning("bus.lost", group=self.group, removed=len(tps))

    def _forget(self, tps: frozenset[TopicPartition]) -> None:
        self._assignment = self._assignment - tps
        self._paused = self._paused - tps
        self._want_paused = self._want_paused - tps

    def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        owned = {tp: o for tp, o in offsets.items() if tp in self._assignment}
        if not owned or self._consumer is None:
            return
        try:
            self._consumer.commit(
                offsets=[
                    confluent_kafka.TopicPartition(t.topic, t.partition, o)
                    for t, o in owned.items()
                ],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise bus_error(exc.args[0]) from exc

    # -- Consumer ------------------------------------------------------------------------

    async def poll(self, max_messages: int, timeout: float) -> list[Message]:
        messages: list[Message] = await self._on_thread(self._poll, max_messages, timeout)
        return messages

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            await self._on_thread(self._commit, dict(offsets))

    def assignment(self) -> frozenset[TopicPartition]:
        return self._assignment

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._want_paused = self._want_paused | set(partitions)  # applied at the next poll

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._want_paused = self._want_paused - set(partitions)

    async def close(self) -> None:
        if self._consumer is not None:
            # Leaves the group: the revoke callback commits first (the runner has drained its
            # work before closing). A broker whose rebalance never completes could hold this
            # for minutes: give up waiting (the group drops this member after its session
            # timeout, as after a crash).
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self._on_thread(self._consumer.close)
            except TimeoutError:
                log.warning("kafka.close_timeout", group=self.group)
        self._thread.shutdown(wait=False)
