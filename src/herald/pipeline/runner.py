"""Run a stage's handler over a consumer's messages, in batches: in order within a key,
concurrent across keys.

- A batch holds at most one message per key (user): a key's next message waits for the batch
  of the one before it, so one user's messages are handled strictly in order while other
  users' messages share batches. Batches are up to ``batch_size`` messages; a batch that is
  not full waits up to ``linger`` seconds for more; up to ``concurrency`` batches run at once.
  (``batch_size=1`` with a high concurrency is a task per key, for handlers that wait long.)
- In-flight work is bounded: when ``max_in_flight`` messages are waiting, the runner stops
  reading (backpressure) until half have finished; full for ``pause_after`` seconds, it pauses
  its partitions and polls them, so the bus keeps it in its group.
- Only contiguous finished offsets are committed: a slow message holds back the commit point
  of its partition, never the work, and after a crash everything from it on is read again.
- A handler that raises fails its whole batch, which is then split: each message is handled
  alone, so one message that cannot be handled never fails the others. A message that fails
  alone is retried with backoff; handlers deal with their own domain errors (poison is
  dead-lettered), so an exception here means the database or the bus is unwell and waiting is
  the cure.
- When partitions are revoked (a rebalance) or the runner stops, the messages it already holds
  for them are finished (up to ``drain_timeout``) before the last commit, so the next owner
  starts exactly where this one ended. Dropping a queued message instead would hold the commit
  point before it and make the next owner repeat everything finished after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from herald.bus.base import Consumer, Message, TopicPartition
from herald.observability import metrics
from herald.observability.logging import get_logger
from herald.pipeline.stall import StallWatch
from herald.reliability.backoff import Backoff
from herald.wakeup import sleep_unless, wait_for_event

log = get_logger(__name__)

Handler = Callable[[Message], Awaitable[None]]
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]
Key = tuple[str, str]


def one_at_a_time(handler: Handler) -> BatchHandler:
    """A handler of single messages as a handler of batches of one (``batch_size=1``)."""

    async def handle(batch: Sequence[Message]) -> None:
        for message in batch:
            await handler(message)

    return handle


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
        handler: BatchHandler,
        *,
        name: str,
        max_in_flight: int = 256,
        batch_size: int = 1,
        linger: float = 0.0,
        concurrency: int | None = None,
        commit_interval: float = 0.5,
        pause_after: float = 5.0,
        drain_timeout: float = 20.0,
        retry_backoff: Backoff = _BACKOFF,
        stall_watch: StallWatch | None = None,
    ) -> None:
        self.consumer = consumer
        self.handler = handler
        self.name = name
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.linger = linger
        self.concurrency = concurrency or max_in_flight
        self.commit_interval = commit_interval
        self.pause_after = pause_after
        self.drain_timeout = drain_timeout
        self.retry_backoff = retry_backoff
        self._tracker = OffsetTracker()
        self._queues: dict[Key, deque[Message]] = {}
        self._ready: dict[Key, float] = {}  # keys whose head waits for a batch -> since when
        self._parked: set[Key] = set()  # handed back while stopping: left for the next owner
        self._batches: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._paused = False
        self._capacity = asyncio.Event()  # the main loop waits on it when full
        self._progress = asyncio.Event()  # a revocation waits on it for running work
        self._dispatch = asyncio.Event()  # the dispatcher: keys became ready, or a batch ended
        self._stop = asyncio.Event()
        self._draining_until: float | None = None  # stopping: dispatch until then
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
        dispatcher = asyncio.create_task(self._dispatcher(), name=f"{self.name}:dispatch")
        try:
            await self._consume()
        finally:
            try:
                await self._shutdown()
            finally:
                dispatcher.cancel()
                await asyncio.gather(dispatcher, return_exceptions=True)

    async def _consume(self) -> None:
        next_commit = time.monotonic() + self.commit_interval
        failures = 0
        full_since: float | None = None
        while not self._stop.is_set():
            self._raise_if_crashed()
            room = self.max_in_flight - self._in_flight
            try:
                # When full, stop reading until half has drained (no flapping). Only a runner
                # full for long pauses its partitions and polls, to stay in its group: a pause
                # makes Kafka's client drop what it has fetched and fetch it again on resume.
                if room <= 0 or (full_since and self._in_flight > self.max_in_flight // 2):
                    full_since = full_since or time.monotonic()
                    await wait_for_event(self._capacity, self.commit_interval)
                    if time.monotonic() - full_since >= self.pause_after:
                        self._set_paused(True)
                        # Paused partitions give nothing, but one assigned during this poll
                        # may: such messages are taken, not dropped (that would skip them).
                        for message in await self.consumer.poll(0, 0):
                            self._enqueue(message)
                else:
                    full_since = None
                    self._set_paused(False)
                    for message in await self._poll_unless_stopped(room):
                        self._enqueue(message)
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

    def _raise_if_crashed(self) -> None:
        if self._crashed is not None:
            raise RuntimeError(f"{self.name}: a key worker crashed") from self._crashed

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

    def _enqueue(self, message: Message) -> None:
        self._tracker.started(message.tp, message.offset)
        self._in_flight += 1
        # Messages without a key keep their partition's order.
        key = (message.topic, message.key if message.key is not None else f"#{message.partition}")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._ready[key] = time.monotonic()
            self._dispatch.set()
        queue.append(message)

    # -- batches ---------------------------------------------------------------------------

    async def _dispatcher(self) -> None:
        """Starts a batch whenever keys are ready and a batch may run."""
        while True:
            await self._dispatch.wait()
            self._dispatch.clear()
            while self._ready and len(self._batches) < self.concurrency and self._dispatching():
                wait = self._linger_left()
                if wait > 0:
                    await wait_for_event(self._dispatch, wait)  # more may come meanwhile
                    continue
                self._start_batch()

    def _dispatching(self) -> bool:
        if not self._stop.is_set():
            return True
        return self._draining_until is not None and time.monotonic() < self._draining_until

    def _linger_left(self) -> float:
        """How long a batch that is not full may still wait for more keys."""
        if self.linger <= 0 or len(self._ready) >= self.batch_size or self._stop.is_set():
            return 0.0
        oldest = next(iter(self._ready.values()))
        return oldest + self.linger - time.monotonic()

    def _start_batch(self) -> None:
        keys = []
        for key in self._ready:
            keys.append(key)
            if len(keys) == self.batch_size:
                break
        for key in keys:
            del self._ready[key]
        batch = [(key, self._queues[key][0]) for key in keys]
        task = asyncio.create_task(self._run_batch(batch), name=f"{self.name}:batch")
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._dispatch.set()
        if not task.cancelled() and task.exception() is not None:
            # A bug, not a handler failure (those are retried): stop rather than limp on
            # with messages that will never finish.
            self._crashed = task.exception()

    async def _run_batch(self, batch: list[tuple[Key, Message]]) -> None:
        messages = [message for _, message in batch]
        outcome = await self._attempt(messages)
        if outcome is None and len(batch) > 1:
            # One message may be what fails the batch: each goes alone, so it fails alone.
            log.warning("consumer.batch_split", runner=self.name, size=len(batch))
            for key, message in batch:
                if await self._handle_alone(message):
                    self._finished(key, message)
                else:
                    self._parked.add(key)
            return
        if outcome is None:
            outcome = await self._handle_alone(messages[0], failed_once=True)
        for key, message in batch:
            if outcome:
                self._finished(key, message)
            else:
                self._parked.add(key)

    async def _attempt(self, messages: list[Message]) -> bool | None:
        """Run the handler once: True when it succeeded, False when it handed the messages
        back, None when it failed."""
        try:
            await self.handler(messages)
        except HandBack:
            return False
        except Exception:
            log.exception(
                "consumer.handler_failed",
                runner=self.name,
                messages=len(messages),
                topic=messages[0].topic,
                partition=messages[0].partition,
                offset=messages[0].offset,
            )
            return None
        self._handled.inc(len(messages))
        return True

    async def _handle_alone(self, message: Message, *, failed_once: bool = False) -> bool:
        """Run the handler on one message until it succeeds; False if the runner stopped or
        the handler handed it back first."""
        attempt = 1 if failed_once else 0
        while True:
            if attempt and await sleep_unless(self._stop, self.retry_backoff.ceiling(attempt)):
                return False
            outcome = await self._attempt([message])
            if outcome is not None:
                return outcome
            attempt += 1

    def _finished(self, key: Key, message: Message) -> None:
        queue = self._queues.get(key)
        if queue and queue[0] is message:
            queue.popleft()
            self._in_flight -= 1
        self._tracker.finished(message.tp, message.offset)
        if queue:
            self._ready[key] = time.monotonic()
        elif queue is not None:
            del self._queues[key]
        self._capacity.set()
        self._progress.set()
        self._dispatch.set()

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
        """Forget queued messages of these partitions, except those a batch is handling."""
        for key in list(self._queues):
            queue = self._queues[key]
            running = key not in self._ready and key not in self._parked
            keep = [
                m for i, m in enumerate(queue) if (i == 0 and running) or m.tp not in partitions
            ]
            dropped = len(queue) - len(keep)
            if not dropped:
                continue
            self._in_flight -= dropped
            self._capacity.set()
            if keep:
                queue.clear()
                queue.extend(keep)
            else:
                del self._queues[key]
                self._ready.pop(key, None)
                self._parked.discard(key)

    def _holds(self, partitions: frozenset[TopicPartition]) -> bool:
        return any(
            m.tp in partitions
            for key, queue in self._queues.items()
            if key not in self._parked
            for m in queue
        )

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
        """Finish the messages already taken (up to the deadline), commit them, leave."""
        self._draining_until = time.monotonic() + self.drain_timeout
        self._dispatch.set()
        while self._unfinished() and time.monotonic() < self._draining_until:
            if self._crashed is not None:
                break
            await wait_for_event(self._progress, self._draining_until - time.monotonic())
        self._draining_until = None
        if self._batches:
            abandoned = len(self._batches)
            for task in list(self._batches):
                task.cancel()
            await asyncio.wait(set(self._batches))
            log.warning("consumer.drain_timeout", runner=self.name, abandoned=abandoned)
        await self._commit()
        try:
            await self.consumer.close()
        except Exception:
            log.exception("consumer.close_failed", runner=self.name)

    def _unfinished(self) -> bool:
        return bool(self._batches) or any(key not in self._parked for key in self._queues)
