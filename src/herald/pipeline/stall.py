"""Is consumption stuck? The signal behind ``/readyz`` and ``herald_consumer_stalled``.

A partition is stalled when messages wait in it and the group's committed offset there has
not moved for ``stall_after`` seconds. That covers a member that holds its partitions but does
not move, and partitions that nobody holds: a rebalance that never completes (a member that
died, or left, and was never replaced), or a member that holds none while the others stall. A
member with nothing assigned while the others keep up is an idle standby, not a stall; a busy
group whose backlog grows while its commits move is merely busy.

A group is stalled when one of its partitions is, and every process with a member in it
reports not ready: the group is what cannot move. Groups whose job is to hold messages back
(Kafka's retry scheduler) are not watched. The positions come from the sampler, every
``HERALD_METRICS_SAMPLE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from herald.bus.base import Position, TopicPartition
from herald.observability import metrics


@dataclass
class _Partition:
    committed: int
    since: float  # when it was last seen moving, or with nothing waiting


class StallWatch:
    def __init__(self, stall_after: float) -> None:
        self.stall_after = stall_after
        self._groups: dict[str, dict[TopicPartition, _Partition]] = {}

    @property
    def watching(self) -> bool:
        return bool(self._groups)

    def watch(self, group: str) -> None:
        self._groups.setdefault(group, {})

    def sampled(self, group: str, positions: Mapping[TopicPartition, Position]) -> None:
        """The group's positions, as the sampler read them."""
        partitions = self._groups.get(group)
        if partitions is None:
            return
        now = time.monotonic()
        for tp, position in positions.items():
            known = partitions.get(tp)
            if known is None or position.lag == 0 or position.committed != known.committed:
                partitions[tp] = _Partition(position.committed, now)
        metrics.consumer_stalled.labels(group).set(1 if self._reason(group, now) else 0)

    def stalled(self) -> dict[str, str]:
        """Each stalled group, with why."""
        now = time.monotonic()
        reasons = {group: self._reason(group, now) for group in self._groups}
        return {group: reason for group, reason in reasons.items() if reason}

    def _reason(self, group: str, now: float) -> str:
        stuck = sorted(
            str(tp) for tp, p in self._groups[group].items() if now - p.since >= self.stall_after
        )
        if not stuck:
            return ""
        return f"no commit for {self.stall_after:g}s+ while messages wait in {', '.join(stuck)}"
