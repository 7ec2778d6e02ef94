"""User-supplied URLs cannot make Herald connect inside the network (SSRF, OWASP API7).

A canary listens on loopback, which these tests do not allow; it counts every connection and
must count none, whether a URL is refused when it is registered or when it is sent to.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import apprise
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from herald.api.app import create_app
from herald.channels import apprise_hosts, dns_pin
from herald.channels.apprise import AppriseConfig, AppriseProvider, load_plugins
from herald.channels.apprise_hosts import Server
from herald.channels.base import OutboundMessage
from herald.channels.webhook import WebhookConfig, WebhookProvider
from herald.channels.webpush import WebPushConfig, WebPushProvider
from herald.config import Settings
from herald.errors import OutboundRefusedError, TransientDeliveryError
from herald.outbound import OutboundPolicy
from herald.runtime import Runtime
from tests.conftest import TEST_OUTBOUND_ALLOW, settings_for
from tests.fakes.canary import Canary, listening, self_signed
from tests.fakes.push_service import BrowserSubscription
from tests.pipeline_harness import PipelineFactory

SECRET = "whsec_ssrf_test"


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with listening("127.0.0.1") as bird:
        yield bird


def spellings(port: int, scheme: str = "http") -> list[str]:
    """The canary's address, every way a URL can say it."""
    hosts = [
        "127.0.0.1",
        "0x7f000001",
        "2130706433",
        "017700000001",
        "127.1",
        "127.0.0.1.",
        "[::ffff:7f00:1]",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "localhost",  # from /etc/hosts: a name that resolves to loopback
        "localhost.",
        "LOCALHOST",
        "0",  # 0.0.0.0: on Linux a connection to it reaches loopback
        "0.0.0.0",
        "[::]",
    ]
    return [f"{scheme}://{host}:{port}/hook" for host in hosts]


# -- at registration --------------------------------------------------------------------------


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    """Conftest's runtime (and so its ``client``) without the loopback allowance."""
    rt = Runtime(settings_for(database_url, outbound_allow=""))
    await rt.start(migrate=False)
    yield rt
    await rt.close()


def subscription(endpoint: str) -> dict[str, Any]:
    browser = BrowserSubscription(endpoint, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))
    document: dict[str, Any] = json.loads(browser.to_json())
    return document


def refused_field(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    [problem] = body["errors"]
    return problem["field"], problem["message"]


async def test_registering_any_spelling_of_loopback_is_refused_and_nothing_connects(
    client: httpx.AsyncClient, canary: Canary
) -> None:
    for i, url in enumerate(spellings(canary.port)):
        response = await client.put(f"/api/v1/users/u{i}", json={"webhook_url": url})
        field, message = refused_field(response)
        assert field == "webhook_url", url
        assert "not allowed (HERALD_OUTBOUND_ALLOW)" in message, (url, message)
        assert "/hook" not in message  # the path is not echoed

        pushed = await client.put(
            f"/api/v1/users/p{i}",
            json={"web_push": [subscription("https://93.184.216.34/ok"), subscription(url)]},
        )
        assert refused_field(pushed)[0] == "web_push[1].endpoint", url

    assert (await client.get("/api/v1/users/u0")).status_code == 404  # nothing was stored
    assert canary.connections == 0


async def test_a_refusal_says_only_not_allowed_whether_or_where_the_name_resolves(
    client: httpx.AsyncClient, canary: Canary
) -> None:
    # Whether an inside name resolves, and to what kind of address, is not the caller's
    # business: a name that resolves to loopback, one that does not resolve and literal
    # addresses all get the same answer (the details go to Herald's log only).
    hosts = ["localhost", "hooks.nonexistent.invalid", "127.0.0.1", "10.0.0.1", "169.254.169.254"]
    for host in hosts:
        expected = f"{host} is not allowed (HERALD_OUTBOUND_ALLOW)"
        webhook = await client.put("/api/v1/users/a", json={"webhook_url": f"http://{host}/h"})
        assert refused_field(webhook) == ("webhook_url", expected)
        push = await client.put(
            "/api/v1/users/a", json={"web_push": [subscription(f"https://{host}/push")]}
        )
        assert refused_field(push) == ("web_push[0].endpoint", expected)
        chat = await client.put("/api/v1/users/a", json={"apprise_urls": [f"json://{host}/x"]})
        assert refused_field(chat) == ("apprise_urls[0]", expected)
    public = await client.put("/api/v1/users/a", json={"webhook_url": "https://93.184.216.34/h"})
    assert public.status_code == 201, public.text
    assert canary.connections == 0


async def test_a_notification_to_an_inline_inside_url_is_refused(
    client: httpx.AsyncClient, canary: Canary
) -> None:
    message = {"subject": "S", "message": "M"}
    for url in spellings(canary.port):
        response = await client.post(
            "/api/v1/notifications",
            json={**message, "contacts": {"webhook_url": url}, "channels": ["webhook"]},
        )
        assert refused_field(response)[0] == "contacts.webhook_url", url

    batch = await client.post(
        "/api/v1/notifications/batch",
        json={
            "items": [
                {**message, "contacts": {"webhook_url": "https://93.184.216.34/h"}},
                {**message, "contacts": {"webhook_url": f"http://0x7f000001:{canary.port}/"}},
            ]
        },
    )
    assert batch.status_code == 202, batch.text
    items = batch.json()["items"]
    assert [item["status"] for item in items] == [202, 422]
    assert items[1]["error"]["errors"][0]["field"] == "items[1].contacts.webhook_url"
    assert canary.connections == 0


# -- at send time -----------------------------------------------------------------------------


@asynccontextmanager
async def api_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    rt = Runtime(settings)
    await rt.start(migrate=False)
    try:
        transport = httpx.ASGITransport(app=create_app(rt, open_access=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http
    finally:
        await rt.close()


def message(channel: str, recipient: str) -> OutboundMessage:
    return OutboundMessage(
        delivery_id="dlv-1",
        notification_id="ntf-1",
        channel=channel,
        recipient=recipient,
        subject="S",
        body="B",
        attempt=1,
    )


async def fixed_secret(message: OutboundMessage) -> list[str]:
    return [SECRET]


async def test_the_webhook_provider_refuses_inside_urls_before_connecting(canary: Canary) -> None:
    hooks = WebhookProvider("webhook", WebhookConfig(timeout_seconds=2), fixed_secret)
    await hooks.start()
    try:
        for url in spellings(canary.port):
            with pytest.raises(OutboundRefusedError) as caught:
                await hooks.send(message("webhook", url))
            assert str(caught.value).startswith("webhook: "), url
            assert str(caught.value).endswith("not allowed (HERALD_OUTBOUND_ALLOW)"), url
        assert canary.connections == 0
    finally:
        await hooks.close()

    # The canary does count: allowed, the same provider does connect (and is hung up on).
    allowed = WebhookProvider(
        "webhook",
        WebhookConfig(timeout_seconds=2),
        fixed_secret,
        outbound=OutboundPolicy.parse(TEST_OUTBOUND_ALLOW),
    )
    await allowed.start()
    try:
        with pytest.raises(TransientDeliveryError):
            await allowed.send(message("webhook", f"http://127.0.0.1:{canary.port}/hook"))
    finally:
        await allowed.close()
    assert canary.connections == 1


def vapid_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_the_webpush_provider_refuses_inside_endpoints_before_connecting(
    canary: Canary,
) -> None:
    config = WebPushConfig(
        vapid_private_key=SecretStr(vapid_pem()),
        vapid_subject="mailto:ops@herald.example.com",
        timeout_seconds=2,
    )
    push = WebPushProvider("webpush", config)
    await push.start()
    try:
        endpoints = [*spellings(canary.port, "https"), f"http://127.0.0.1:{canary.port}/push"]
        for endpoint in endpoints:
            with pytest.raises(OutboundRefusedError, match=r"^webpush: .*not allowed"):
                await push.send(message("webpush", json.dumps(subscription(endpoint))))
    finally:
        await push.close()
    assert canary.connections == 0


async def test_an_allowed_host_name_is_reached_at_the_address_checked_and_no_other(
    canary: Canary,
) -> None:
    # Allowing a name allows that name, not its address under another spelling or name.
    policy = OutboundPolicy.parse("localhost")
    async with httpx.AsyncClient(
        transport=policy.transport("webhook", httpx.Limits(max_connections=2))
    ) as http:
        with pytest.raises(OutboundRefusedError, match=r": 127\.0\.0\.1 is not allowed"):
            await http.get(f"http://127.0.0.1:{canary.port}/")
        assert canary.connections == 0
        with pytest.raises(httpx.TransportError):  # the canary hangs up
            await http.get(f"http://localhost:{canary.port}/")
    assert canary.connections == 1


@pytest.mark.parametrize(
    ("channel", "profile"),
    [
        ("webhook", lambda port: {"webhook_url": f"http://127.0.0.1:{port}/hooks/u1"}),
        # Apprise connects by itself; the check refuses before Apprise gets the URL.
        ("apprise", lambda port: {"apprise_urls": [f"json://127.0.0.1:{port}/chat"]}),
    ],
)
async def test_a_user_url_allowed_once_is_refused_when_sent_after_the_allowance_is_gone(
    start_pipeline: PipelineFactory,
    canary: Canary,
    channel: str,
    profile: Callable[[int], dict[str, object]],
) -> None:
    async with start_pipeline(channels=(channel,), outbound_allow="") as strict:
        # Registered through an API process whose configuration still allowed loopback...
        settings = strict.runtime.settings.model_copy(
            update={"outbound_allow": TEST_OUTBOUND_ALLOW}
        )
        async with api_process(settings) as http:
            response = await http.put("/api/v1/users/u1", json=profile(canary.port))
            assert response.status_code == 201, response.text
        # ...and sent by a worker whose configuration does not: refused before connecting.
        sent = await strict.send(user_id="u1", channels=[channel])
        done = await strict.wait_until_done(sent["id"])
    [delivery] = done["deliveries"]
    assert done["status"] == "FAILED"
    assert delivery["status"] == "DEAD_LETTERED"
    assert delivery["attempts"] == 1  # permanent: not retried
    assert delivery["last_error"] == (
        f"{channel}: 127.0.0.1 is not allowed (HERALD_OUTBOUND_ALLOW)"
    )
    assert canary.connections == 0


# -- Apprise URLs -----------------------------------------------------------------------------
#
# Apprise connects by itself: the URL is refused before Apprise gets it, and what it does get
# resolves to the addresses checked (herald.channels.dns_pin).

PASSWORD = "pw-s3cr3t"


def apprise_spellings(port: int) -> list[str]:
    """Apprise URLs whose server is the canary, through plugins that take a host."""
    return [
        f"json://127.0.0.1:{port}/x",
        f"json://0x7f000001:{port}/",
        f"jsons://2130706433:{port}/",
        f"json://LOCALHOST.:{port}/",
        f"xml://[::1]:{port}/",
        f"form://localhost:{port}",
        # The SMTP server: the URL's host, or ?smtp=
        f"mailto://user:{PASSWORD}@127.0.0.1:{port}/?to=a@b.c&from=herald@example.com",
        f"mailto://user:{PASSWORD}@example.com:{port}/?smtp=127.0.0.1&to=a@b.c",
        f"ntfys://127.0.0.1:{port}/topic",
        f"gotify://127.0.0.1:{port}/token-abc",
        f"rocket://user:{PASSWORD}@127.0.0.1:{port}/#general",
        f"apprise://127.0.0.1:{port}/token-abc",
    ]


async def test_registering_an_apprise_url_to_an_inside_server_is_refused(
    client: httpx.AsyncClient, canary: Canary
) -> None:
    for i, url in enumerate(apprise_spellings(canary.port)):
        response = await client.put(f"/api/v1/users/a{i}", json={"apprise_urls": [url]})
        field, message = refused_field(response)
        assert field == "apprise_urls[0]", url
        assert message.endswith("not allowed (HERALD_OUTBOUND_ALLOW)"), (url, message)
        assert PASSWORD not in message
        assert "://" not in message  # the host is named, never the URL

    # Apprise itself has no use for this one (its sender would be user@127.0.0.1): refused too.
    unusable = await client.put(
        "/api/v1/users/m",
        json={"apprise_urls": [f"mailto://user:{PASSWORD}@127.0.0.1:{canary.port}/?to=a@b.c"]},
    )
    field, message = refused_field(unusable)
    assert (field, message) == ("apprise_urls[0]", "mailto:// is not a URL Apprise can use")

    # The first refused URL is named; a public address and a vendor's API pass.
    public = ["json://93.184.216.34/hook", "discord://123456/token-abc"]
    mixed = await client.put(
        "/api/v1/users/b", json={"apprise_urls": [*public, "json://169.254.169.254/latest"]}
    )
    assert refused_field(mixed) == (
        "apprise_urls[2]",
        "169.254.169.254 is not allowed (HERALD_OUTBOUND_ALLOW)",
    )
    accepted = await client.put("/api/v1/users/b", json={"apprise_urls": public})
    assert accepted.status_code == 201, accepted.text

    assert (await client.get("/api/v1/users/a0")).status_code == 404  # nothing was stored
    assert canary.connections == 0


async def test_a_notification_to_an_inline_inside_apprise_url_is_refused(
    client: httpx.AsyncClient, canary: Canary
) -> None:
    for url in apprise_spellings(canary.port):
        response = await client.post(
            "/api/v1/notifications",
            json={
                "subject": "S",
                "message": "M",
                "contacts": {"apprise_urls": [url]},
                "channels": ["apprise"],
            },
        )
        assert refused_field(response)[0] == "contacts.apprise_urls[0]", url
    assert canary.connections == 0


def apprise_service(url: str) -> Any:
    load_plugins()
    # (Herald's asset turns redirects off: a URL turning them on is refused.)
    asset = apprise.AppriseAsset(storage_mode="memory", http_redirects=False)
    service = apprise.Apprise.instantiate(url, asset=asset)
    assert service is not None, url
    return service


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        # A vendor's API: the "host" is a token, an id or a sender's domain.
        ("discord://123456/token-abc", []),
        ("tgram://123456789:abcdefg_hijklmnopqrstuvwxyz12345678/", []),
        ("ntfy://my-topic", []),  # ntfy.sh
        ("mailgun://user@example.com/apikey", []),
        ("wechat://corp:secret@1000002/@all", []),
        ("notica://token-abc", []),
        # A server the URL names.
        ("ntfys://ntfy.example.com/topic", [Server("ntfy.example.com", 0)]),
        ("mailto://user:pw@gmail.com", [Server("smtp.gmail.com", 587)]),
        ("matrix://user:pw@matrix.example.com/#room", [Server("matrix.example.com", 0)]),
        ("xmatters://key@company/integration", [Server("company.xmatters.com", 0)]),
        ("lametric://apikey@192.168.1.5", [Server("192.168.1.5", 0)]),
    ],
)
def test_which_server_an_apprise_url_names(url: str, servers: list[Server]) -> None:
    assert apprise_hosts.servers(apprise_service(url)) == servers


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("matrixs://user:pw@matrix.example.com/#room", "add discovery=no"),
        ("bsky://user@app-password", "unknown until sent"),
        ("fcm://project/token?keyfile=/etc/herald/fcm.json", "with a file to read"),
        ("mailto://user:pw@example.com?to=a@b.c&wkd=yes", "recipients' domains"),
    ],
)
def test_apprise_urls_whose_servers_are_found_at_send_time_are_refused(
    url: str, reason: str
) -> None:
    with pytest.raises(OutboundRefusedError, match=reason):
        apprise_hosts.servers(apprise_service(url))


async def test_the_apprise_provider_refuses_inside_servers_before_connecting(
    canary: Canary,
) -> None:
    chat = AppriseProvider("apprise", AppriseConfig(timeout_seconds=2))
    await chat.start()
    try:
        for url in apprise_spellings(canary.port):
            with pytest.raises(OutboundRefusedError) as caught:
                await chat.send(message("apprise", url))
            text = str(caught.value)
            assert text.startswith("apprise: "), url
            assert text.endswith("not allowed (HERALD_OUTBOUND_ALLOW)"), url
            assert PASSWORD not in text
            assert "://" not in text
        with pytest.raises(OutboundRefusedError, match="add discovery=no"):
            await chat.send(message("apprise", f"matrixs://u:{PASSWORD}@example.com/#room"))
        assert canary.connections == 0
    finally:
        await chat.close()

    # The canary does count: allowed, the same provider hands the URL to Apprise, which
    # connects (and is hung up on).
    allowed = AppriseProvider(
        "apprise",
        AppriseConfig(timeout_seconds=2),
        outbound=OutboundPolicy.parse(TEST_OUTBOUND_ALLOW),
    )
    await allowed.start()
    try:
        with pytest.raises(TransientDeliveryError):
            await allowed.send(message("apprise", f"json://127.0.0.1:{canary.port}/x"))
    finally:
        await allowed.close()
    assert canary.connections == 1


async def test_apprise_connects_where_the_name_pointed_when_checked_not_where_it_points_next(
    canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers an allowed address to the check, then the canary's."""
    checked = Canary()
    server = await asyncio.start_server(checked.accept, "127.0.0.2", canary.port)
    answers = iter(["127.0.0.2"])
    system = dns_pin._system_getaddrinfo

    def rebinding_dns(host: Any, port: Any, *args: Any) -> list[Any]:
        if host in ("rebind.test", b"rebind.test"):  # (anyio asks in bytes)
            return system(next(answers, "127.0.0.1"), port, *args)
        return system(host, port, *args)

    chat = AppriseProvider(
        "apprise", AppriseConfig(timeout_seconds=2), outbound=OutboundPolicy.parse("127.0.0.2")
    )
    await chat.start()
    # The pinning resolver (installed by a send, process-wide; here before the check too, as
    # any earlier send in the process leaves it) asks the "system" one below.
    monkeypatch.setattr(socket, "getaddrinfo", dns_pin._getaddrinfo)
    monkeypatch.setattr(dns_pin, "_system_getaddrinfo", rebinding_dns)
    try:
        async with server:
            with pytest.raises(TransientDeliveryError):  # (the listener hangs up)
                await chat.send(message("apprise", f"json://rebind.test:{canary.port}/x"))
    finally:
        await chat.close()
    assert (checked.connections, canary.connections) == (1, 0)
    assert socket.getaddrinfo("rebind.test", 80)[0][4][0] == "127.0.0.1"  # pinned no more


# -- TLS still checks the host name -----------------------------------------------------------


@pytest.fixture
def certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for the name ``localhost`` only (PEM cert, PEM key)."""
    return self_signed("localhost", x509.DNSName("localhost"))


async def test_tls_goes_to_the_checked_address_with_the_url_host_as_sni_and_identity(
    certificate: tuple[bytes, bytes], tmp_path: Path
) -> None:
    cert_pem, key_pem = certificate
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cadata=cert_pem.decode())
    limits = httpx.Limits(max_connections=2)
    async with server:
        by_name = OutboundPolicy.parse("localhost").transport("w", limits, ssl_context=trust)
        async with httpx.AsyncClient(transport=by_name) as http:
            response = await http.get(f"https://localhost:{port}/")
        assert (response.status_code, response.text) == (200, "ok")
        assert names == ["localhost"]

        # Connected by address, the certificate (for the name only) does not match.
        by_address = OutboundPolicy.parse("127.0.0.0/8").transport("w", limits, ssl_context=trust)
        async with httpx.AsyncClient(transport=by_address) as http:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await http.get(f"https://127.0.0.1:{port}/")
