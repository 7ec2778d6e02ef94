"""Pinned names resolve to their checked addresses only, while (and only while) pinned."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest

from herald.channels import dns_pin


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
