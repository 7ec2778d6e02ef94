"""herald.garbage: start-up objects frozen, allocation-driven collections rare, and the paced
collections really run (young and middle each time, everything every FULL_EVERY-th)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from herald import garbage


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_exists_and_raises_the_young_threshold(
    collector_restored: None,
) -> None:
    garbage.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == garbage.YOUNG_THRESHOLD


async def test_pace_collects_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(garbage, "PACE_SECONDS", 0.01)
    monkeypatch.setattr(garbage, "FULL_EVERY", 3)
    generations: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(seen)
    pacing = asyncio.create_task(garbage.pace())
    try:
        for _ in range(500):
            if len(generations) >= 6:
                break
            await asyncio.sleep(0.01)
    finally:
        pacing.cancel()
        gc.callbacks.remove(seen)
    await asyncio.gather(pacing, return_exceptions=True)
    # Allocation may add young collections of its own in between; the paced ones are there.
    assert generations.count(2) >= 1
    assert generations.count(1) >= 2
    assert pacing.cancelled()  # it stops when its process does
