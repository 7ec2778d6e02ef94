"""When a consumer group counts as stalled (the readiness signal)."""

from __future__ import annotations

import time

import pytest

from herald.bus.base import Position, TopicPartition
from herald.pipeline.stall import StallWatch

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


def test_waiting_messages_whose_commit_does_not_move_stall_the_group(clock: list[float]) -> None:
    watch = StallWatch(stall_after=60)
    watch.watch("g")
    watch.sampled("g", {TP0: Position(5, 9), TP1: Position(3, 3)})
    clock[0] += 59
    watch.sampled("g", {TP0: Position(5, 12), TP1: Position(3, 3)})
    assert watch.stalled() == {}
    clock[0] += 2
    assert "t[0]" in watch.stalled()["g"]
    assert "t[1]" not in watch.stalled()["g"]


def test_a_moving_commit_or_an_empty_partition_is_not_a_stall(clock: list[float]) -> None:
    watch = StallWatch(stall_after=60)
    watch.watch("g")
    for step in range(10):
        # A busy partition: the backlog grows, but the commit moves.
        watch.sampled("g", {TP0: Position(step, 100 + 10 * step), TP1: Position(7, 7)})
        clock[0] += 30
    assert watch.stalled() == {}


def test_groups_not_watched_are_ignored(clock: list[float]) -> None:
    watch = StallWatch(stall_after=1)
    watch.sampled("retry", {TP0: Position(0, 5)})
    clock[0] += 10
    assert watch.stalled() == {}
    assert not watch.watching
