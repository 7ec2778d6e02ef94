"""The wake-up link between `herald serve` and its consumer process: a commit on one side wakes
the waiters on the other, for the topics they wait on, and a side that goes away is noticed."""

from __future__ import annotations

import asyncio
import socket

from herald.consumer_process import WakeupLink
from herald.wakeup import Wakeup, wait_for_event


def _linked() -> tuple[dict[str, Wakeup], dict[str, Wakeup], WakeupLink, WakeupLink]:
    left_end, right_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    left = {"bus": Wakeup(), "outbox": Wakeup()}
    right = {"bus": Wakeup(), "outbox": Wakeup()}
    left_link, right_link = WakeupLink(left_end, left), WakeupLink(right_end, right)
    left_link.start()
    right_link.start()
    return left, right, left_link, right_link


async def test_a_notify_wakes_the_other_side_for_its_topics_only() -> None:
    left, right, left_link, right_link = _linked()
    router = right["bus"].subscribe(["requested"])
    status = right["bus"].subscribe(["status"])
    relay = right["outbox"].subscribe()
    here = left["bus"].subscribe(["requested"])

    left["bus"].notify({"requested"})

    assert await wait_for_event(router, 2.0)
    assert await wait_for_event(here, 0.1)  # and this side's own waiters, as before
    assert not await wait_for_event(status, 0.1)
    assert not await wait_for_event(relay, 0.1)
    left_link.close()
    right_link.close()


async def test_what_arrives_is_not_sent_back() -> None:
    left, right, left_link, right_link = _linked()
    echo = left["outbox"].subscribe()
    relay = right["outbox"].subscribe()

    left["outbox"].notify()
    assert echo.is_set()  # this side's own waiter, at once
    echo.clear()

    assert await wait_for_event(relay, 2.0)
    assert not await wait_for_event(echo, 0.2)  # no echo came back through the link
    left_link.close()
    right_link.close()


async def test_the_other_side_going_away_closes_the_link() -> None:
    _left, right, left_link, right_link = _linked()

    left_link.close()

    await asyncio.wait_for(right_link.closed.wait(), 2.0)
    right["bus"].notify({"requested"})  # sending on a closed link is a no-op, not an error
    right_link.close()
