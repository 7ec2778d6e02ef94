"""The Bus protocol: publish keyed messages; consume them as a group, in order per partition.

Semantics every backend keeps (and the contract tests check):
- ``publish`` returns only once the messages are durable; messages with one key keep their order.
- A consumer group reads each partition in offset order and resumes after its last commit;
  ``commit`` takes the *next* offset to read, as Kafka does.
- Delivery is at-least-once: whatever was not committed is read again after a restart.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from herald.observability.logging import get_logger
from herald.records import record

if TYPE_CHECKING:
    from herald.store.database import Connection

log = get_logger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@record
class OutgoingMessage:
    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@record
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Mapping[str, str]
    timestamp: datetime

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a consumer group stands in a partition: the next offset it will read (its last
    commit; 0 before any) and the partition's end."""

    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


class RebalanceListener(Protocol):
    """Told when partitions leave this consumer (implemented by the consumer runner)."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        """Finish in-flight work of these partitions; return the offsets to commit for them."""
        ...

    async def lost(self, partitions: frozenset[TopicPartition]) -> None:
        """These partitions are gone already (another member owns them): drop their work."""
        ...


class Consumer(abc.ABC):
    """One member of a consumer group."""

    listener: RebalanceListener | None = None

    def set_rebalance_listener(self, listener: RebalanceListener) -> None:
        self.listener = listener

    @abc.abstractmethod
    async def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` from unpaused partitions; waits up to ``timeout`` for some."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record, per partition, the next offset this group should read."""

    @abc.abstractmethod
    def assignment(self) -> frozenset[TopicPartition]: ...

    @abc.abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class Bus(abc.ABC):
    """A message bus backend. Public methods log; backends implement the ``_`` primitives."""

    name: str = "bus"
    #: True when ``publish_in`` can join the caller's database transaction.
    transactional: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at shutdown."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the bus cannot be reached (used by /readyz)."""

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics; existing ones keep their partition count."""

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        await self._publish(messages)
        log.debug("bus.published", backend=self.name, count=len(messages))

    async def publish_in(self, conn: Connection, messages: Sequence[OutgoingMessage]) -> None:
        """Publish as part of the caller's database transaction (transactional backends)."""
        raise NotImplementedError(f"the {self.name} bus cannot join a database transaction")

    def after_commit(self, topics: Collection[str]) -> None:  # noqa: B027 - optional hook
        """Tell local consumers of ``topics`` that a ``publish_in`` transaction committed."""

    @abc.abstractmethod
    async def _publish(self, messages: Sequence[OutgoingMessage]) -> None: ...

    @abc.abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    async def lag(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """Per partition of ``topics``: messages after the group's committed offset."""
        return {tp: p.lag for tp, p in (await self.positions(group, topics)).items()}

    @abc.abstractmethod
    async def positions(self, group: str, topics: Sequence[str]) -> dict[TopicPartition, Position]:
        """Per partition of ``topics``: the group's committed offset and the partition's end."""
