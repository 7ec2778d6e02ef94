"""Which user-supplied URLs Herald may connect to, and an httpx transport that holds to it.

Webhook URLs and Web Push endpoints come from API callers. Left alone, a caller could make
Herald POST to 127.0.0.1, to the cloud metadata service at 169.254.169.254 or to anything else
on the private network (SSRF, OWASP API7). So only ``http(s)`` URLs may be contacted, and only
if EVERY address their host resolves to is public, unless the operator allows the address or
the host name in ``HERALD_OUTBOUND_ALLOW``. Endpoints the operator configures (Twilio, FCM,
SMTP, ``HERALD_PROVIDERS``) are trusted and never come through here.

The check runs twice: when a URL is registered (a 422 naming the field) and when a message is
sent, inside :class:`GuardedTransport`, whose TCP connection goes to exactly the addresses that
were just checked. Numeric spellings (``0x7f000001``, ``2130706433``, ``127.1``) are left to
the OS resolver, which is what would connect anyway: the check sees what the socket would.
Apprise URLs get the same check, but Apprise connects by itself (herald.channels.apprise_hosts).

A refusal tells the caller only that the host "is not allowed": not whether an inside name
resolves, nor to what kind of address (a caller could otherwise map the network). Why goes to
the log (``outbound.refused``), without the addresses a name resolved to.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import anyio
import httpcore
import httpx

from herald.errors import OutboundRefusedError
from herald.observability.logging import get_logger

log = get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "HERALD_OUTBOUND_ALLOW"
# The longest a check at registration waits for DNS (at send time the connect timeout rules).
RESOLVE_TIMEOUT = 5.0

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the low 32 bits are IPv4
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def _embedded(ip: ipaddress.IPv6Address) -> Iterator[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address carries, which is where a packet to it may end up."""
    if ip.ipv4_mapped is not None:
        yield "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        yield "6to4", ip.sixtofour
    if ip.teredo is not None:
        server, client = ip.teredo
        yield "Teredo", server
        yield "Teredo", client
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        yield "embedded", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _kind(ip: IPAddress) -> str | None:
    # ``is_global`` alone misses some (fec0::/10, ::a.b.c.d on Python 3.11), so the usual
    # suspects are named first, for the message, and anything else non-global follows.
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    return None


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address ("a loopback address"), or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        for how, inner in _embedded(ip):
            kind = _kind(inner)
            if kind is not None:
                return f"{kind} ({how} {inner})"
    return _kind(ip)


def _host(name: str) -> str:
    """A host as compared and resolved: lower case, without brackets or the root's dot."""
    host = name.strip().lower().removeprefix("[").removesuffix("]")
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order; OSError if none."""
    try:
        found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (ValueError, OverflowError) as exc:  # NUL bytes, labels IDNA refuses, bad ports
        raise OSError(f"not a host name: {exc}") from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError("no addresses")
    return addresses


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """What may be contacted besides public addresses: networks and exact host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str) -> OutboundPolicy:
        """``"10.0.0.0/8, 127.0.0.1, hooks.internal"``: CIDRs, addresses and host names."""
        return _parse(value)

    def _allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in network for c in candidates for network in self.networks)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Resolves ``host`` once and checks every address it gave; connect only to these.

        Raises :class:`OutboundRefusedError` if one is not allowed, OSError if ``host`` does
        not resolve (which may pass: at send time it is a connection failure like any other).
        """
        name = _host(host)
        if not name:
            raise OutboundRefusedError("the URL has no host")
        found = await _resolve(name, port)
        self.check(name, found)
        return found

    def check(self, host: str, found: Iterable[IPAddress]) -> None:
        """Raises :class:`OutboundRefusedError` unless every address of ``found`` (what
        ``host`` resolved to) may be contacted."""
        name = _host(host)
        if name in self.hosts:
            return
        for ip in found:
            kind = None if self._allowed(ip) else classify(ip)
            if kind is not None:
                subject = f"{name} is" if _literal(name) else f"{name[:255]} resolves to"
                raise _refused(name, f"{subject} {kind}")

    async def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be contacted, or None if it may. Never raises: a URL that does
        not parse or a host that does not resolve within RESOLVE_TIMEOUT is refused too."""
        try:
            parsed = httpx.URL(url.strip())
        except httpx.InvalidURL:
            return "not a valid URL"
        if parsed.scheme not in ("http", "https"):
            scheme = f"{parsed.scheme[:20]}: URLs are" if parsed.scheme else "a relative URL is"
            return f"{scheme} not allowed, only http(s)"
        if not parsed.raw_host:
            return "the URL has no host"
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return await self.host_refusal(host, port)

    async def host_refusal(self, host: str, port: int) -> str | None:
        """:meth:`refusal` for a host and port that something else took from a URL."""
        name = _host(host)
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT):
                await self.addresses(host, port)
        except OutboundRefusedError as exc:
            return exc.reason
        except TimeoutError:
            why = f"did not resolve within {RESOLVE_TIMEOUT:g}s"
        except OSError:
            why = "does not resolve"
        else:
            return None
        return _refused(name, f"{name[:255]} {why}").reason

    def transport(
        self, what: str, limits: httpx.Limits, *, ssl_context: ssl.SSLContext | None = None
    ) -> GuardedTransport:
        return GuardedTransport(self, what, limits, ssl_context=ssl_context)


def _refused(host: str, why: str) -> OutboundRefusedError:
    """The refusal of ``host``, which says only that it is not allowed: whether an inside name
    resolves, and to what kind of address, is not a caller's business (nor an oracle for
    mapping the network). ``why`` goes to the log, for the operator, never with an address
    the host resolved to."""
    log.info("outbound.refused", host=host[:255], why=why)
    return OutboundRefusedError(f"{host[:255] or 'the URL'} is not allowed ({SETTING})")


@functools.lru_cache(maxsize=32)
def _parse(value: str) -> OutboundPolicy:
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        host = _host(entry)
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"{entry!r} is neither a CIDR, an IP address nor a host name")
        hosts.add(host)
    return OutboundPolicy(tuple(networks), frozenset(hosts))


# -- the transport ---------------------------------------------------------------------------
#
# httpx cannot be told "connect to this address" and it resolves host names itself, so a
# check made before a request could pass for one DNS answer while the socket goes to another
# (DNS rebinding). The check therefore sits in httpcore's network backend, where the socket is
# opened: it resolves once, checks, and connects to a checked address, while httpcore still
# does TLS with the URL's host name (SNI and certificate checks are unchanged). The transport
# is httpx's own default one cut down to what Herald uses: no proxies (a proxy would connect
# instead of us), HTTP/1.1.


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: OutboundPolicy, what: str) -> None:
        self._policy = policy
        self._what = what
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._policy.addresses(host, port)
        except OutboundRefusedError as exc:
            raise OutboundRefusedError(exc.reason, what=self._what) from None
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's errors as httpx's (what httpx's own transport does); the most specific wins,
# because a class's MRO is searched from the class up.
_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.ProxyError: httpx.ProxyError,
}


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            if cls in _ERRORS:
                raise _ERRORS[cls](str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only where ``policy`` allows (see above)."""

    def __init__(
        self,
        policy: OutboundPolicy,
        what: str,
        limits: httpx.Limits,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_GuardedBackend(policy, what),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
