"""Pinned names resolve to their checked addresses only, while (and only while) pinned."""

from __future__ import annotations

import asyncio
import contextvars
import socket
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address

import pytest

from herald.channels import dns_pin
from herald.outbound import OutboundPolicy


def resolved(host: str, family: int = 0) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, 80, family, socket.SOCK_STREAM)]


def test_a_pinned_name_gets_the_checked_addresses_and_others_resolve_as_usual() -> None:
    dns_pin.install()
    before = resolved("localhost")
    with dns_pin.pinned({"Pinned.Example.": [ip_address("192.0.2.7"), ip_address("2001:db8::7")]}):
        assert sorted(resolved("pinned.example")) == ["192.0.2.7", "2001:db8::7"]
        assert resolved("PINNED.example.", socket.AF_INET) == ["192.0.2.7"]
        assert resolved("pinned.example", socket.AF_INET6) == ["2001:db8::7"]
        assert resolved("localhost") == before
    with pytest.raises(socket.gaierror):
        resolved("pinned.example")  # no such name in DNS: the pin is gone


def test_overlapping_sends_keep_a_name_pinned_until_the_last_ends() -> None:
    first = dns_pin.pinned({"a.example": [ip_address("192.0.2.1")]})
    second = dns_pin.pinned({"a.example": [ip_address("192.0.2.2")]})
    with first:
        with second:
            assert sorted(resolved("a.example")) == ["192.0.2.1", "192.0.2.2"]
        assert "192.0.2.1" in resolved("a.example")
    with pytest.raises(socket.gaierror):
        resolved("a.example")


def test_asking_for_a_family_the_name_was_not_checked_for_is_no_address() -> None:
    pin = dns_pin.pinned({"v4.example": [ip_address("192.0.2.9")]})
    with pin, pytest.raises(socket.gaierror):
        resolved("v4.example", socket.AF_INET6)


# -- the guard: every look-up of a send is checked against the outbound policy ---------------

STRICT = OutboundPolicy()
REFUSED = "localhost is not allowed (HERALD_OUTBOUND_ALLOW)"


def test_a_guard_checks_the_look_ups_of_its_context_and_of_threads_given_that_context() -> None:
    before = resolved("localhost")
    with dns_pin.guarded(STRICT) as refused, ThreadPoolExecutor(1) as pool:
        with pytest.raises(socket.gaierror, match="not allowed"):
            resolved("localhost")
        with pytest.raises(socket.gaierror, match="not allowed"):
            resolved("127.0.0.2")  # a literal address is checked as well
        assert resolved("93.184.216.34") == ["93.184.216.34"]  # public: fine
        # Apprise's worker threads run in a copy of the sender's context: guarded too.
        context = contextvars.copy_context()
        with pytest.raises(socket.gaierror, match="not allowed"):
            pool.submit(context.run, resolved, "localhost").result()
        # Any other thread (a database driver's, say) is not.
        assert pool.submit(resolved, "localhost").result() == before
    assert refused == [REFUSED, "127.0.0.2 is not allowed (HERALD_OUTBOUND_ALLOW)", REFUSED]
    assert resolved("localhost") == before


def test_a_guard_lets_through_what_the_policy_allows_by_network_or_name() -> None:
    with dns_pin.guarded(OutboundPolicy.parse("127.0.0.1")) as refused:
        assert resolved("127.0.0.1") == ["127.0.0.1"]
        with pytest.raises(socket.gaierror):
            resolved("127.0.0.2")
    with dns_pin.guarded(OutboundPolicy.parse("localhost")):
        assert resolved("localhost")  # allowed by name, whatever its addresses
    assert refused == ["127.0.0.2 is not allowed (HERALD_OUTBOUND_ALLOW)"]


async def test_a_guard_in_one_task_leaves_the_other_tasks_alone() -> None:
    guarding = asyncio.Event()
    done = asyncio.Event()

    async def send() -> None:
        with dns_pin.guarded(STRICT):
            guarding.set()
            await done.wait()
            with pytest.raises(socket.gaierror):
                resolved("localhost")

    sender = asyncio.create_task(send())
    async with asyncio.timeout(5):
        await guarding.wait()
    # Meanwhile, on the same event loop: this task (the API, a webhook, the database) is free.
    assert resolved("localhost")
    done.set()
    await sender
