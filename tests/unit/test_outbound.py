"""The SSRF check on user-supplied URLs: every spelling of an inside address is refused.

Only literal public addresses are used for "allowed": this machine has no DNS beyond
/etc/hosts. Names that resolve (``localhost``) come from /etc/hosts, as anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from herald.config import Settings
from herald.errors import OutboundRefusedError, PermanentDeliveryError
from herald.outbound import OutboundPolicy, classify

STRICT = OutboundPolicy()

REFUSED = [
    # loopback, in every spelling the resolver accepts
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://0x7f000001/", "0x7f000001 resolves to a loopback address"),
    ("http://2130706433/", "2130706433 resolves to a loopback address"),
    ("http://017700000001/", "017700000001 resolves to a loopback address"),
    ("http://127.1/", "127.1 resolves to a loopback address"),
    ("http://0x7f.1/", "resolves to a loopback address"),
    ("http://127.0.0.1./", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:7f00:1]/", "a loopback address (IPv4-mapped 127.0.0.1)"),
    ("http://[::ffff:127.0.0.1]:8080/", "a loopback address (IPv4-mapped 127.0.0.1)"),
    ("http://[::127.0.0.1]/", "a loopback address (embedded 127.0.0.1)"),
    ("http://[2002:7f00:1::]/", "a loopback address (6to4 127.0.0.1)"),
    ("http://[64:ff9b::7f00:1]/", "a loopback address (embedded 127.0.0.1)"),
    ("http://localhost/", "localhost resolves to a loopback address"),
    ("http://LOCALHOST./hook", "localhost resolves to a loopback address"),
    ("https://user:secret@127.0.0.1:8443/x?token=1", "127.0.0.1 is a loopback address"),
    # unspecified
    ("http://0/", "0 resolves to an unspecified address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://[::]/", ":: is an unspecified address"),
    # link-local, the cloud metadata service among them
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[::ffff:169.254.169.254]/", "a link-local address (IPv4-mapped 169.254.169.254)"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    # private
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://0xa000001/", "0xa000001 resolves to a private address"),
    ("http://[::ffff:a00:1]/", "a private address (IPv4-mapped 10.0.0.1)"),
    ("http://[fc00::1]/", "fc00::1 is a private address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a private address"),
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "(Teredo 10.0.0.1)"),
    # multicast, shared, reserved and the rest of what is not global
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://[ff02::1]/", "ff02::1 is a multicast address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
    ("http://240.0.0.1/", "240.0.0.1 is a private address"),
    ("http://255.255.255.255/", "255.255.255.255 is a private address"),
    ("http://192.0.2.1/", "192.0.2.1 is a private address"),
    ("http://[fec0::1]/", "fec0::1 is a site-local address"),
    ("http://[2001:db8::1]/", "2001:db8::1 is a private address"),
]


def refusal(url: str, policy: OutboundPolicy = STRICT) -> str | None:
    return asyncio.run(policy.refusal(url))


def logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.herald_context for r in caplog.records if r.name == "herald.outbound"]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_every_spelling_of_an_inside_address_is_refused(
    url: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="herald.outbound")
    reason = refusal(url)
    assert reason is not None
    assert reason.endswith(" is not allowed (HERALD_OUTBOUND_ALLOW)")
    # Nothing of the URL but its host reaches the message (paths and userinfo carry tokens).
    assert "secret" not in reason
    assert "token" not in reason
    # Why is for the operator's log only.
    [entry] = logged(caplog)
    assert why in str(entry["why"])
    assert " address" not in reason


def test_a_refusal_names_the_host_only_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller learns that a host is not allowed, not whether or where it resolves."""
    caplog.set_level(logging.INFO, logger="herald.outbound")
    for host in ("localhost", "nonexistent.invalid", "127.0.0.1", "10.0.0.1", "0x7f000001"):
        assert refusal(f"http://{host}/hook") == f"{host} is not allowed (HERALD_OUTBOUND_ALLOW)"
    assert [(entry["host"], entry["why"]) for entry in logged(caplog)] == [
        ("localhost", "localhost resolves to a loopback address"),
        ("nonexistent.invalid", "nonexistent.invalid does not resolve"),
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("0x7f000001", "0x7f000001 resolves to a loopback address"),
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/",
        "https://93.184.216.34:8443/hooks/42?sig=abc",
        "http://[2606:4700::1111]/",
        "https://[2606:4700::1111]:443/push/xyz",
        "  https://93.184.216.34/  ",
    ],
)
def test_public_addresses_are_allowed(url: str) -> None:
    assert refusal(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.216.34/drop", "ftp: URLs are not allowed, only http(s)"),
        ("file:///etc/passwd", "file: URLs are not allowed"),
        ("gopher://93.184.216.34:70/", "gopher: URLs are not allowed"),
        ("javascript:alert(1)", "javascript: URLs are not allowed"),
        ("mailto:ops@example.com", "mailto: URLs are not allowed"),
        ("//93.184.216.34/x", "a relative URL is not allowed"),
        ("93.184.216.34", "a relative URL is not allowed"),
        ("", "a relative URL is not allowed"),
        ("http:///path-only", "the URL has no host"),
        ("http://0177.0.0.1/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://nonexistent.invalid/", "nonexistent.invalid is not allowed"),
    ],
)
def test_other_schemes_and_unusable_urls_are_refused(url: str, why: str) -> None:
    reason = refusal(url)
    assert reason is not None
    assert why in reason


def test_an_allowed_network_lets_its_addresses_through_and_only_them() -> None:
    policy = OutboundPolicy.parse("10.0.0.0/8, 127.0.0.1")
    assert refusal("http://10.1.2.3:8080/hook", policy) is None
    assert refusal("http://0xa010203/", policy) is None  # the same address, spelled in hex
    assert refusal("http://[::ffff:10.1.2.3]/", policy) is None  # IPv4-mapped: the same one
    assert refusal("http://127.0.0.1/", policy) is None
    assert refusal("http://127.0.0.2/", policy) is not None
    assert refusal("http://192.168.1.1/", policy) is not None
    assert refusal("http://169.254.169.254/", policy) is not None
    assert refusal("http://93.184.216.34/", policy) is None  # public stays allowed


def test_an_allowed_ipv6_network() -> None:
    policy = OutboundPolicy.parse("fd00::/8")
    assert refusal("http://[fd12::1]/", policy) is None
    assert refusal("http://[fc00::1]/", policy) is not None
    assert refusal("http://[::1]/", policy) is not None


def test_an_allowed_host_name_is_matched_exactly_and_not_by_its_address() -> None:
    policy = OutboundPolicy.parse("LocalHost.")
    assert policy.hosts == frozenset({"localhost"})
    assert refusal("http://localhost:9000/hook", policy) is None
    assert refusal("http://LOCALHOST./hook", policy) is None
    # Other names and spellings of the same address are not the allowed name.
    assert refusal("http://127.0.0.1:9000/hook", policy) is not None
    assert refusal("http://vm/hook", OutboundPolicy.parse("localhost")) is not None
    assert refusal("http://sub.localhost/", policy) is not None


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_an_empty_allowlist_allows_nothing_extra(value: str) -> None:
    assert OutboundPolicy.parse(value) == OutboundPolicy()


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "http://hooks.internal", "a b", "*.internal"])
def test_an_allowlist_entry_that_is_neither_cidr_nor_host_is_a_settings_error(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a CIDR"):
        OutboundPolicy.parse(entry)
    with pytest.raises(ValidationError, match="neither a CIDR"):
        Settings(outbound_allow=f"127.0.0.0/8,{entry}")


def test_the_setting_parses_cidrs_addresses_and_names() -> None:
    policy = Settings(outbound_allow="10.0.0.0/8, ::1 ,hooks.internal").outbound_policy()
    assert policy.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert policy.hosts == frozenset({"hooks.internal"})
    assert Settings().outbound_policy() == OutboundPolicy()


async def test_addresses_returns_what_was_checked_and_raises_a_permanent_error() -> None:
    assert await STRICT.addresses("93.184.216.34", 443) == [ipaddress.ip_address("93.184.216.34")]
    with pytest.raises(OutboundRefusedError) as caught:
        await STRICT.addresses("localhost", 80)
    assert isinstance(caught.value, PermanentDeliveryError)
    assert caught.value.reason == "localhost is not allowed (HERALD_OUTBOUND_ALLOW)"
    with pytest.raises(socket.gaierror):  # unresolvable is not a refusal at send time
        await STRICT.addresses("nonexistent.invalid", 80)


# -- properties -------------------------------------------------------------------------------

INSIDE = [
    ipaddress.IPv4Network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
]
inside_addresses = st.sampled_from(INSIDE).flatmap(
    lambda n: st.integers(int(n.network_address), int(n.broadcast_address)).map(
        ipaddress.IPv4Address
    )
)


def spellings(ip: ipaddress.IPv4Address) -> list[str]:
    return [
        f"http://{ip}/",
        f"http://{int(ip)}/",
        f"http://{hex(int(ip))}/",
        f"http://{hex(int(ip)).upper().replace('X', 'x')}/",
        f"http://[::ffff:{ip}]/",
        f"https://[{ipaddress.IPv6Address(int(ip) | 0xFFFF_0000_0000)}]:8443/",
    ]


@settings(max_examples=150, deadline=None)
@given(inside_addresses)
def test_any_inside_ipv4_address_is_refused_in_every_spelling(ip: ipaddress.IPv4Address) -> None:
    async def check() -> list[str | None]:
        return list(await asyncio.gather(*(STRICT.refusal(url) for url in spellings(ip))))

    for url, reason in zip(spellings(ip), asyncio.run(check()), strict=True):
        assert reason is not None, url
        assert "not allowed" in reason, (url, reason)


@settings(max_examples=2000)
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_an_ipv4_address_passes_only_if_it_is_global(ip: ipaddress.IPv4Address) -> None:
    if classify(ip) is None:
        assert ip.is_global
        assert ip not in ipaddress.IPv4Network("100.64.0.0/10")


@settings(max_examples=2000)
@given(
    st.one_of(
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**32 - 1).map(lambda v: v | 0xFFFF_0000_0000),  # IPv4-mapped
        st.integers(0, 2**32 - 1),  # IPv4-compatible
        st.integers(0, 2**32 - 1).map(lambda v: (0x2002 << 112) | (v << 80)),  # 6to4
        st.integers(0, 2**32 - 1).map(lambda v: (0x64FF9B << 96) | v),  # NAT64
    ).map(ipaddress.IPv6Address)
)
def test_an_ipv6_address_passes_only_if_it_and_what_it_embeds_are_global(
    ip: ipaddress.IPv6Address,
) -> None:
    if classify(ip) is None:
        assert ip.is_global
        for inner in (ip.ipv4_mapped, ip.sixtofour):
            assert inner is None or classify(inner) is None


hosts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[a-z0-9.\-\[\]:%_]{0,40}\Z"),
    st.sampled_from(["localhost", "127.0.0.1", "[::1]", "0", "93.184.216.34", "[::ffff:0:0]"]),
)
urls = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda scheme, host, port, rest: f"{scheme}{host}{port}{rest}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "", "//", "http:"]),
        hosts,
        st.one_of(st.just(""), st.integers(-5, 70_000).map(lambda p: f":{p}"), st.text(max_size=6)),
        st.text(max_size=20),
    ),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(urls)
def test_any_string_gets_a_decision_and_never_an_unexpected_exception(url: str) -> None:
    reason = refusal(url)
    assert reason is None or isinstance(reason, str)
    if reason is None:
        # Only a URL whose host resolved to public addresses can pass: none do here but
        # literal public ones.
        assert url.strip().lower().startswith(("http://", "https://"))
