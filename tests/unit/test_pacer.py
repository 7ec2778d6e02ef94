"""A provider's limit paced in one process: never more than the limit in any second."""

from __future__ import annotations

import asyncio
import bisect
import time

from herald.reliability.ratelimit import LocalPacer


async def sends(pacer: LocalPacer, count: int, concurrency: int) -> list[float]:
    times: list[float] = []
    queue = asyncio.Queue[int]()
    for i in range(count):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            queue.get_nowait()
            async with pacer.turn():
                times.append(time.monotonic())

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return sorted(times)


def busiest_second(times: list[float], window: float = 1.0) -> int:
    """The most sends in any window of one second (sliding, starting at each send)."""
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


async def test_concurrent_senders_never_exceed_the_limit_in_any_second() -> None:
    times = await sends(LocalPacer(40), count=100, concurrency=16)
    assert busiest_second(times) <= 40
    assert times[-1] - times[0] >= 99 / 40 * 0.98  # spaced out, not sent at once


async def test_a_send_goes_a_second_after_the_one_limit_sends_before_it_was_over() -> None:
    """However long each send takes to arrive (it has, once it is over), no second holds
    more than the limit: here the sends take 0 to 150 ms, in no order."""
    pacer = LocalPacer(20)
    arrived: list[float] = []

    async def send(i: int) -> None:
        async with pacer.turn():
            await asyncio.sleep(0.15 * ((i * 7) % 11) / 10)  # on its way
            arrived.append(time.monotonic())

    await asyncio.gather(*(send(i) for i in range(60)))
    assert busiest_second(sorted(arrived)) <= 20
    assert max(arrived) - min(arrived) >= 2.0  # spaced out: 60 at 20 a second


async def test_slots_missed_while_the_loop_was_busy_do_not_become_a_burst() -> None:
    pacer = LocalPacer(20)

    async def busy_loop() -> None:
        await asyncio.sleep(0.5)
        time.sleep(0.3)  # noqa: ASYNC251 - the loop is blocked on purpose: slots are missed

    times, _ = await asyncio.gather(sends(pacer, count=40, concurrency=8), busy_loop())
    assert busiest_second(times) <= 20
    assert times[-1] - times[0] >= 39 / 20 * 0.98


async def test_after_an_idle_spell_it_starts_at_once_without_a_burst() -> None:
    pacer = LocalPacer(10)
    async with pacer.turn():
        pass
    await asyncio.sleep(1.2)
    started = time.monotonic()
    async with pacer.turn() as waited:
        assert waited < 0.05  # its slot is now
    times = await sends(pacer, count=15, concurrency=5)
    assert busiest_second(times) <= 10
    assert times[-1] - started >= 1.35  # 15 more at 10/s: a burst would take no time
