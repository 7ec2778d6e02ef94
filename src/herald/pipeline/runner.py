"""Run a handler over a consumer's messages: concurrent across keys, in order within a key.

- Each key (user) has a queue worked by one task, so one user's messages are handled strictly
  in order while other users' messages proceed in parallel.
- In-flight work is bounded: when ``max_in_flight`` messages are waiting, the runner pauses
  its partitions (backpressure) and resumes them once half have finished.
- Only contiguous finished offsets are committed: a slow message holds back the commit point
  of its partition, never the work, and after a crash everything from it on is read again.
- A handler that raises is retried with backoff; handlers deal with their own domain errors,
  so an exception here means the database or the bus is unwell and waiting is the cure.
- When partitions are revoked (a rebalance) or the runner stops, the messages it already holds
  for them are finished (up to ``drain_timeout``) before the last commit, so the next owner
  starts exactly where this one ended. Dropping a queued message instead would hold the commit
  point before it and make the next owner repeat everything finished after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from herald.bus.base import Consumer, Message, TopicPartition
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.stall import StallWatch
from herald.reliability.backoff import Backoff
from herald.wakeup import sleep_unless, wait_for_event

log = get_logger(__name__)

Handler = Callable[[Message], Awaitable[None]]


class HandBack(Exception):
    """Raised by a handler that is stopping: leave this message unfinished and uncommitted."""


_BACKOFF = Backoff(base=0.2, cap=10.0)


class OffsetTracker:
    """Per partition, the next offset that is safe to commit."""

    def __init__(self) -> None:
        self._started: dict[TopicPartition, deque[int]] = {}
        self._finished: dict[TopicPartition, set[int]] = {}
        self._commit_point: dict[TopicPartition, int] = {}
        self._dirty: set[TopicPartition] = set()

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._started.setdefault(tp, deque()).append(offset)
        self._finished.setdefault(tp, set())

    def finished(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._started:
            return  # the partition was revoked while this message ran
        started, finished = self._started[tp], self._finished[tp]
        finished.add(offset)
        while started and started[0] in finished:
            done = started.popleft()
            finished.discard(done)
            self._commit_point[tp] = done + 1
            self._dirty.add(tp)

    def take_committable(self) -> dict[TopicPartition, int]:
        """Commit points that moved since the last call."""
        offsets = {tp: self._commit_point[tp] for tp in self._dirty}
        self._dirty.clear()
        return offsets

    def restore(self, offsets: dict[TopicPartition, int]) -> None:
        """Put back commit points whose commit failed, to try them again."""
        self._dirty.update(tp for tp in offsets if tp in self._commit_point)

    def forget(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop tracking these partitions; returns their last commit points."""
        points = {tp: self._commit_point[tp] for tp in partitions if tp in self._commit_point}
        for tp in partitions:
            self._started.pop(tp, None)
            self._finished.pop(tp, None)
            self._commit_point.pop(tp, None)
            self._dirty.discard(tp)
        return points


class ConsumerRunner:
    def __init__(
        self,
        consumer: Consumer,
        handler: Handler,
        *,
        name: str,
        max_in_flight: int = 256,
        commit_interval: float = 0.5,
        drain_timeout: float = 20.0,
        retry_backoff: Backoff = _BACKOFF,
        stall_watch: StallWatch | None = None,
    ) -> None:
        self.consumer = consumer
        self.handler = handler
        self.name = name
        self.max_in_flight = max_in_flight
        self.commit_interval = commit_interval
        self.drain_timeout = drain_timeout
        self.retry_backoff = retry_backoff
        self._tracker = OffsetTracker()
        self._queues: dict[tuple[str, str], deque[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._paused = False
        self._capacity = asyncio.Event()  # the main loop waits on it when full
        self._progress = asyncio.Event()  # a revocation waits on it for running work
        self._stop = asyncio.Event()
        self._crashed: BaseException | None = None
        self._handled = metrics.messages_handled.labels(name)
        if stall_watch is not None:
            stall_watch.watch(name)  # readiness: whether the group's commits move

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.consumer.set_rebalance_listener(self)
        try:
            await self._consume()
        finally:
            await self._shutdown()

    async def _consume(self) -> None:
        next_commit = time.monotonic() + self.commit_interval
        failures = 0
        while not self._stop.is_set():
            if self._crashed is not None:
                raise RuntimeError(f"{self.name}: a key worker crashed") from self._crashed
            room = self.max_in_flight - self._in_flight
            try:
                # Pause when full; resume only once half has drained (no flapping).
                if room <= 0 or (self._paused and self._in_flight > self.max_in_flight // 2):
                    self._set_paused(True)
                    await wait_for_event(self._capacity, self.commit_interval)
                    await self.consumer.poll(0, 0)  # keeps group membership alive
                else:
                    self._set_paused(False)
                    for message in await self._poll_unless_stopped(room):
                        self._dispatch(message)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.exception("consumer.poll_failed", runner=self.name)
                else:  # the traceback was logged when this run of failures began
                    log.error(
                        "consumer.poll_failed", runner=self.name, failures=failures, error=repr(exc)
                    )
                await sleep_unless(self._stop, self.retry_backoff.ceiling(failures))
            if time.monotonic() >= next_commit:
                await self._commit()
                next_commit = time.monotonic() + self.commit_interval

    async def _poll_unless_stopped(self, room: int) -> list[Message]:
        """Poll, but give up waiting for new messages as soon as the runner is told to stop.

        An abandoned batch only holds messages after everything already dispatched, so
        dropping it leaves no gap: the next owner reads them.
        """
        poll = asyncio.ensure_future(self.consumer.poll(room, self.commit_interval))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if poll.done():
            return poll.result()
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
        return []

    def _set_paused(self, paused: bool) -> None:
        assignment = self.consumer.assignment()
        if paused:
            self.consumer.pause(assignment)  # every turn: partitions may have been assigned since
        elif self._paused:
            self.consumer.resume(assignment)
        if paused != self._paused:
            self._paused = paused
            log.debug("consumer.backpressure", runner=self.name, paused=paused)

    def _dispatch(self, message: Message) -> None:
        self._tracker.started(message.tp, message.offset)
        self._in_flight += 1
        # Messages without a key keep their partition's order.
        key = (message.topic, message.key if message.key is not None else f"#{message.partition}")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            task = asyncio.create_task(self._work_key(key, queue), name=f"{self.name}:{key[1]}")
            self._tasks.add(task)
            task.add_done_callback(self._key_worker_done)
        queue.append(message)

    def _key_worker_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a handler failure (those are retried): stop rather than limp on
            # with messages that will never finish.
            self._crashed = task.exception()

    async def _work_key(self, key: tuple[str, str], queue: deque[Message]) -> None:
        try:
            while queue:
                message = queue[0]
                if not await self._handle(message):
                    return
                queue.popleft()
                self._tracker.finished(message.tp, message.offset)
                self._in_flight -= 1
                self._capacity.set()
                self._progress.set()
        finally:
            self._queues.pop(key, None)

    async def _handle(self, message: Message) -> bool:
        """Run the handler until it succeeds; False if the runner stopped first."""
        attempt = 0
        while True:
            try:
                await self.handler(message)
                self._handled.inc()
                return True
            except HandBack:
                return False
            except Exception:
                attempt += 1
                log.exception(
                    "consumer.handler_failed",
                    runner=self.name,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    attempt=attempt,
                )
                if await sleep_unless(self._stop, self.retry_backoff.ceiling(attempt)):
                    return False

    # -- RebalanceListener -----------------------------------------------------------------

    async def revoked(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        deadline = time.monotonic() + self.drain_timeout
        while self._holds(partitions) and time.monotonic() < deadline:
            await wait_for_event(self._progress, deadline - time.monotonic())
        self._drop_waiting(partitions)  # what could not be finished in time
        points = self._tracker.forget(partitions)
        log.info("consumer.revoked", runner=self.name, partitions=len(partitions))
        return points

    async def lost(self, partitions: frozenset[TopicPartition]) -> None:
        self._drop_waiting(partitions)
        self._tracker.forget(partitions)
        log.warning("consumer.partitions_lost", runner=self.name, partitions=len(partitions))

    def _drop_waiting(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget queued messages of these partitions; the head of each queue is running."""
        for queue in self._queues.values():
            keep = [m for i, m in enumerate(queue) if i == 0 or m.tp not in partitions]
            dropped = len(queue) - len(keep)
            if dropped:
                queue.clear()
                queue.extend(keep)
                self._in_flight -= dropped
                self._capacity.set()

    def _holds(self, partitions: frozenset[TopicPartition]) -> bool:
        return any(m.tp in partitions for queue in self._queues.values() for m in queue)

    async def _commit(self) -> None:
        offsets = self._tracker.take_committable()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception:
            self._tracker.restore(offsets)
            log.exception("consumer.commit_failed", runner=self.name)

    async def _shutdown(self) -> None:
        """Let started messages finish (up to the deadline), commit them, leave the group."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("consumer.drain_timeout", runner=self.name, abandoned=len(pending))
        await self._commit()
        try:
            await self.consumer.close()
        except Exception:
            log.exception("consumer.close_failed", runner=self.name)
