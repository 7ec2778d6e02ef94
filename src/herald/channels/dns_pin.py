"""Hold a library that resolves host names by itself to what Herald checked and allows.

Apprise makes its own connections (requests, smtplib, sockets): it resolves a URL's host again
after Herald checked it, and a DNS answer that changed in between (DNS rebinding: a public
address for the check, an internal one for the connection) would slip past the SSRF check.
While a send runs inside :func:`pinned`, ``socket.getaddrinfo`` answers for the checked names
with the checked addresses only, without asking DNS again. Every other name resolves as usual.

And while it runs inside :func:`guarded`, every look-up made on the send's behalf is checked
against the outbound policy: a name or address it does not allow fails to resolve, so a
connection the check of the URL could not foresee (a redirect, a proxy, a server a plugin
finds by itself) reaches nothing inside. "On the send's behalf" means in the send's context
(contextvars): Apprise runs blocking services in its thread pools, but each job in a copy of
the caller's context (its ``submit_with_context`` and ``copy_context().run``), so the guard
goes with the send into those threads and nowhere else. The rest of the process (the API,
webhooks, the database, Kafka and Redis clients, other sends) runs in other contexts and
resolves as usual even while a send is guarded.

Not covered: names resolved without ``socket.getaddrinfo`` (a UDP ``sendto`` to a name, a DNS
client of a library's own) or in threads a library starts itself without the context;
herald.channels.apprise_hosts refuses the services that do so.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from herald.errors import OutboundRefusedError
from herald.outbound import SETTING, OutboundPolicy

_lock = threading.Lock()
_addresses: dict[str, set[str]] = {}  # name -> every address a running send checked for it
_users: Counter[str] = Counter()  # name -> sends running with it pinned
_system_getaddrinfo = socket.getaddrinfo


class Refused(socket.gaierror):
    """A look-up made on behalf of a guarded send that the outbound policy does not allow."""


@dataclass(frozen=True, slots=True)
class _Guard:
    policy: OutboundPolicy
    refused: list[str] = field(default_factory=list)  # appended to from any of its threads


_guard: ContextVar[_Guard | None] = ContextVar("herald_dns_guard", default=None)


def _key(host: Any) -> str | None:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host.strip().rstrip(".").lower() if isinstance(host, str) else None


def _getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[Any]:
    found = _resolve(host, port, family, type, proto, flags)
    guard = _guard.get()
    if guard is not None:
        _check(guard, host, found)
    return found


def _resolve(host: Any, port: Any, family: int, type: int, proto: int, flags: int) -> list[Any]:
    key = _key(host)
    with _lock:
        addresses = sorted(_addresses.get(key, ())) if key else []
    if not addresses:
        return _system_getaddrinfo(host, port, family, type, proto, flags)
    found: list[Any] = []
    for address in addresses:
        try:
            found += _system_getaddrinfo(
                address, port, family, type, proto, flags | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            continue  # an IPv6 address asked for as AF_INET, say
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{key}: no checked address of that family")
    return found


def _check(guard: _Guard, host: Any, found: list[Any]) -> None:
    """Raises :class:`Refused` unless ``guard``'s policy allows every address ``host``
    resolved to (as for a URL: allowed by name, or each address public or allowed)."""
    name = _key(host) or ""
    try:
        guard.policy.check(name, [ip_address(info[4][0]) for info in found])
    except OutboundRefusedError as exc:
        reason = exc.reason
    except (ValueError, IndexError, TypeError):  # not an IP address: nothing to connect to
        reason = f"{name[:255]} is not allowed ({SETTING})"
    else:
        return
    guard.refused.append(reason)
    raise Refused(socket.EAI_NONAME, reason)


def install() -> None:
    """Route ``socket.getaddrinfo`` through the pins and guards (idempotent; unpinned names,
    outside a guarded send, unchanged)."""
    if socket.getaddrinfo is not _getaddrinfo:
        socket.getaddrinfo = _getaddrinfo


@contextmanager
def pinned(checked: Mapping[str, Iterable[IPv4Address | IPv6Address]]) -> Iterator[None]:
    """Within: each name of ``checked`` resolves to its checked addresses, nothing else.
    Sends may overlap; a name stays pinned (to what any of them checked) until the last ends."""
    names = {key: {str(ip) for ip in ips} for name, ips in checked.items() if (key := _key(name))}
    with _lock:
        install()
        for name, ips in names.items():
            _addresses.setdefault(name, set()).update(ips)
            _users[name] += 1
    try:
        yield
    finally:
        with _lock:
            for name in names:
                _users[name] -= 1
                if _users[name] <= 0:
                    del _users[name]
                    _addresses.pop(name, None)


@contextmanager
def guarded(policy: OutboundPolicy) -> Iterator[list[str]]:
    """Within, in this context and the copies of it that threads are given: every look-up is
    checked against ``policy``, and one it does not allow fails with :class:`Refused`.
    Yields the reasons of the look-ups refused, appended as they happen (a thread that outlives
    the block, such as a service Apprise stopped waiting for, stays guarded)."""
    with _lock:
        install()
    guard = _Guard(policy)
    token = _guard.set(guard)
    try:
        yield guard.refused
    finally:
        _guard.reset(token)
