"""Apprise URLs cannot widen where Apprise goes once Herald checked the server they name.

The scenario of the attack: a "public" server (here 127.0.0.1, the only address these tests
allow) answers 307 or 303 toward an inside host (a canary on 127.0.0.2, not allowed), and the
URL turns Apprise's redirects back on (``?redirect=yes``). The canary counts connections and
must count none: the option is refused, and whatever Apprise connects to while it sends is
checked against the outbound policy too (herald.channels.dns_pin.guarded).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import apprise
import httpx
import pytest
from cryptography import x509

from herald.channels import apprise as herald_apprise
from herald.channels import dns_pin
from herald.channels.apprise import AppriseConfig, AppriseProvider
from herald.channels.base import OutboundMessage
from herald.errors import DeliveryError, OutboundRefusedError
from herald.outbound import OutboundPolicy
from herald.runtime import Runtime
from tests.conftest import settings_for
from tests.fakes.canary import Canary, listening, self_signed

PUBLIC = "127.0.0.1"  # stands for a public server: the one address allowed here
INSIDE = "127.0.0.2"  # stands for the inside network: not allowed
POLICY = OutboundPolicy.parse(PUBLIC)
# Apprise's services that speak HTTP to the server their URL names.
HTTP_SCHEMES = ["json", "form", "xml"]
ALL_SCHEMES = [*HTTP_SCHEMES, *(f"{scheme}s" for scheme in HTTP_SCHEMES)]


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with listening(INSIDE) as bird:
        yield bird


class Redirector:
    """An HTTP(S) server on the "public" address that answers every request with ``status``
    toward the canary's metadata path; it keeps each request line."""

    def __init__(self, status: int, canary: Canary) -> None:
        self.status = status
        self.location = f"http://{INSIDE}:{canary.port}/latest/meta-data/iam"
        self.requests: list[str] = []
        self.port = 0

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (h.partition(":") for h in lines)
                    if k.lower() == "content-length"
                ),
                0,
            )
            await reader.readexactly(length)
            self.requests.append(lines[0])
            writer.write(
                f"HTTP/1.1 {self.status} Elsewhere\r\nLocation: {self.location}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the address 127.0.0.1 (PEM files: cert, key)."""
    cert, key = self_signed(PUBLIC, x509.IPAddress(ipaddress.ip_address(PUBLIC)))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests (inside Apprise) takes proxies from the environment: none unless a test says."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@asynccontextmanager
async def redirecting(
    scheme: str, status: int, canary: Canary, certificate: tuple[Path, Path]
) -> AsyncIterator[Redirector]:
    """A Redirector for ``scheme`` (TLS for the secure ones, trusted by Apprise's requests)."""
    redirector = Redirector(status, canary)
    context = None
    if scheme.endswith("s"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
    server = await asyncio.start_server(redirector.answer, PUBLIC, 0, ssl=context)
    redirector.port = server.sockets[0].getsockname()[1]
    async with server:
        yield redirector


@pytest.fixture(autouse=True)
def trust_the_test_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests, inside Apprise, verifies against this bundle: TLS stays verified.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))


def message(recipient: str) -> OutboundMessage:
    return OutboundMessage(
        delivery_id="dlv-1",
        notification_id="ntf-1",
        channel="apprise",
        recipient=recipient,
        subject="S",
        body="B",
        attempt=1,
    )


@pytest.fixture
async def provider() -> AsyncIterator[AppriseProvider]:
    chat = AppriseProvider("apprise", AppriseConfig(timeout_seconds=3), outbound=POLICY)
    await chat.start()
    yield chat
    await chat.close()


# -- redirects --------------------------------------------------------------------------------

REDIRECTS_ON = ["redirect=yes", "redirect=true", "redirect=1", "REDIRECT=Yes"]


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    """Conftest's runtime (and so its ``client``) allowing only the "public" address."""
    rt = Runtime(settings_for(database_url, outbound_allow=PUBLIC))
    await rt.start(migrate=False)
    yield rt
    await rt.close()


def refused_field(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    [problem] = response.json()["errors"]
    return problem["field"], problem["message"]


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
async def test_registering_an_apprise_url_that_turns_redirects_on_is_refused(
    client: httpx.AsyncClient, scheme: str
) -> None:
    plain = scheme.removesuffix("s")  # (how Apprise's errors name both)
    for i, option in enumerate(REDIRECTS_ON):
        url = f"{scheme}://{PUBLIC}:8080/hook?{option}"
        field, why = refused_field(
            await client.put(f"/api/v1/users/u{i}", json={"apprise_urls": [url]})
        )
        assert (field, why) == ("apprise_urls[0]", f"{plain}:// with redirect=yes is not allowed")
        inline = await client.post(
            "/api/v1/notifications",
            json={"subject": "S", "message": "M", "contacts": {"apprise_urls": [url]}},
        )
        assert refused_field(inline)[0] == "contacts.apprise_urls[0]"
    # Without the option (or turning it off) the same URL is fine.
    for url in (f"{scheme}://{PUBLIC}:8080/hook", f"{scheme}://{PUBLIC}:8080/hook?redirect=no"):
        accepted = await client.put("/api/v1/users/ok", json={"apprise_urls": [url]})
        assert accepted.status_code in (200, 201), accepted.text


@pytest.mark.usefixtures("no_proxies")
@pytest.mark.parametrize("status", [307, 303])
@pytest.mark.parametrize("scheme", ALL_SCHEMES)
async def test_the_apprise_provider_never_follows_a_redirect_toward_the_inside(
    provider: AppriseProvider,
    canary: Canary,
    certificate: tuple[Path, Path],
    scheme: str,
    status: int,
) -> None:
    async with redirecting(scheme, status, canary, certificate) as public:
        url = f"{scheme}://{PUBLIC}:{public.port}/hook?redirect=yes"
        with pytest.raises(DeliveryError) as caught:
            await provider.send(message(url))
    assert canary.connections == 0
    assert public.requests == []  # refused before Apprise got it
    assert isinstance(caught.value, OutboundRefusedError)
    plain = scheme.removesuffix("s")
    assert str(caught.value) == f"apprise: {plain}:// with redirect=yes is not allowed"


@pytest.mark.usefixtures("no_proxies")
@pytest.mark.parametrize("status", [307, 303])
@pytest.mark.parametrize("scheme", ALL_SCHEMES)
async def test_while_a_send_is_guarded_no_connection_apprise_makes_escapes_the_policy(
    canary: Canary, certificate: tuple[Path, Path], scheme: str, status: int
) -> None:
    """Defence in depth: Apprise itself, told to follow the redirect, is stopped at the
    look-up of the redirect's target, made in Apprise's worker thread."""
    herald_apprise.load_plugins()  # as Herald does at start: their first import warns
    async with redirecting(scheme, status, canary, certificate) as public:
        notifier = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        assert notifier.add(f"{scheme}://{PUBLIC}:{public.port}/hook?redirect=yes")
        with dns_pin.guarded(POLICY) as refused:
            result = await notifier.async_notify(body="B", title="T", timeout=3)
        assert public.requests == ["POST /hook HTTP/1.1"]  # the public server was reached
    assert not result
    assert canary.connections == 0
    assert refused == [f"{INSIDE} is not allowed (HERALD_OUTBOUND_ALLOW)"]


async def test_a_proxy_apprise_would_go_through_is_checked_like_any_connection(
    provider: AppriseProvider,
    canary: Canary,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    no_proxies: None,
) -> None:
    """A connection to somewhere the URL does not name (here: a proxy from the environment,
    on an address not allowed) is refused while Apprise sends."""
    monkeypatch.setenv("HTTP_PROXY", f"http://{INSIDE}:{canary.port}")
    async with redirecting("json", 307, canary, certificate) as public:
        with pytest.raises(DeliveryError) as caught:
            await provider.send(message(f"json://{PUBLIC}:{public.port}/hook"))
    assert canary.connections == 0
    assert public.requests == []
    assert isinstance(caught.value, OutboundRefusedError)
    assert str(caught.value) == (
        "apprise: the service tried to connect somewhere not allowed (HERALD_OUTBOUND_ALLOW)"
    )


# -- what reaches the Herald host itself or files on it ---------------------------------------

READS = "with a file to read (key, subscription or template) is not allowed"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("syslog://", "syslog:// reaches the Herald host itself; not allowed"),
        ("syslog://local5", "syslog:// reaches the Herald host itself; not allowed"),
        ("syslog://?logperror=yes", "syslog:// reaches the Herald host itself; not allowed"),
        # UDP: resolved where Herald cannot hold the name to the checked address.
        ("rsyslog://localhost", "rsyslog:// needs an IP address, not a name; not allowed"),
        # A template is read from a path or URL given in the URL.
        ("discord://123456/token-abc?template={file}", READS),
        (f"discord://123456/token-abc?template=http://{INSIDE}/t.json", READS),
        ("tgram://123456789:abcdefg_hijklmnopqrstuvwxyz12345678/?template={file}", READS),
        ("workflow://host:443/workflow/signature?template={file}", READS),
    ],
)
async def test_apprise_urls_that_reach_the_herald_host_or_its_files_are_refused(
    url: str, why: str, tmp_path: Path
) -> None:
    template = tmp_path / "template.json"
    template.write_text('{"content": "{{app_body}}"}')
    loopback = OutboundPolicy.parse("127.0.0.0/8")  # so that only what is checked here refuses
    reason = await herald_apprise.refusal(url.format(file=template), loopback)
    assert reason is not None
    assert why in reason
    assert str(template) not in reason


async def test_rsyslog_to_an_ip_address_is_checked_like_any_host() -> None:
    loopback = OutboundPolicy.parse("127.0.0.0/8")
    assert await herald_apprise.refusal("rsyslog://127.0.0.1", loopback) is None
    assert await herald_apprise.refusal("rsyslog://127.0.0.1", OutboundPolicy()) == (
        "127.0.0.1 is not allowed (HERALD_OUTBOUND_ALLOW)"
    )
