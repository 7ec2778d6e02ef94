from __future__ import annotations

from herald.bus.base import TopicPartition
from herald.pipeline.runner import OffsetTracker

TP = TopicPartition("t", 0)


def test_commit_point_waits_for_the_oldest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.started(TP, offset)
    tracker.finished(TP, 12)
    tracker.finished(TP, 11)
    assert tracker.take_committable() == {}  # 10 is still running
    tracker.finished(TP, 10)
    assert tracker.take_committable() == {TP: 13}  # 10, 11, 12 done: next to read is 13
    assert tracker.take_committable() == {}  # nothing moved since
    tracker.finished(TP, 13)
    assert tracker.take_committable() == {TP: 14}


def test_partitions_are_tracked_apart() -> None:
    tracker, other = OffsetTracker(), TopicPartition("t", 1)
    tracker.started(TP, 0)
    tracker.started(other, 5)
    tracker.finished(other, 5)
    assert tracker.take_committable() == {other: 6}


def test_failed_commits_are_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 0)
    tracker.finished(TP, 0)
    offsets = tracker.take_committable()
    tracker.restore(offsets)
    assert tracker.take_committable() == {TP: 1}
