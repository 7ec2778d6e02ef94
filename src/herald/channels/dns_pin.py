"""Hold a library that resolves host names by itself to the addresses Herald checked.

Apprise makes its own connections (requests, smtplib, aiohttp): it resolves a URL's host again
after Herald checked it, and a DNS answer that changed in between (DNS rebinding: a public
address for the check, an internal one for the connection) would slip past the SSRF check.
While a send runs inside :func:`pinned`, ``socket.getaddrinfo`` answers for the checked names
with the checked addresses only, without asking DNS again. Every other name resolves as usual.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address
from typing import Any

_lock = threading.Lock()
_addresses: dict[str, set[str]] = {}  # name -> every address a running send checked for it
_users: Counter[str] = Counter()  # name -> sends running with it pinned
_system_getaddrinfo = socket.getaddrinfo


def _key(host: Any) -> str | None:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host.strip().rstrip(".").lower() if isinstance(host, str) else None


def _getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[Any]:
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


def install() -> None:
    """Route ``socket.getaddrinfo`` through the pins (idempotent; unpinned names unchanged)."""
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
