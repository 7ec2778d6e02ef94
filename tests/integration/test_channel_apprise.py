"""The Apprise provider against a real local server, through Apprise's json:// service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from herald.channels.apprise import AppriseConfig, AppriseProvider, redact
from herald.channels.base import OutboundMessage
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from herald.outbound import OutboundPolicy
from tests.conftest import TEST_OUTBOUND_ALLOW
from tests.fakes.http_server import LocalHttpServer, Request, Response, running

PASSWORD = "s3cr3t-pa55word"
LEAK = "CHAT-SERVER-BODY-must-not-leak"
# The local servers listen on loopback (tests/integration/test_ssrf.py: what is refused).
LOOPBACK = OutboundPolicy.parse(TEST_OUTBOUND_ALLOW)


class SlowServer(LocalHttpServer):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def answer(self, request: Request) -> Response:
        time.sleep(self.delay)
        return Response(200)


def message(recipient: str, **overrides: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "apprise",
        "recipient": recipient,
        "subject": "Deploy finished",
        "body": "build 42 is live <b>not html</b>",
        "attempt": 1,
    }
    values.update(overrides)
    return OutboundMessage(**values)


@pytest.fixture
async def provider() -> AsyncIterator[AppriseProvider]:
    chat = AppriseProvider("chat", AppriseConfig(timeout_seconds=5.0), outbound=LOOPBACK)
    await chat.start()
    yield chat
    await chat.close()


@pytest.fixture
def server() -> Iterator[LocalHttpServer]:
    with running(LocalHttpServer()) as local:
        yield local


def json_url(server: LocalHttpServer, path: str = "/chat/hook") -> str:
    return f"json://{server.host}:{server.port}{path}"


async def test_a_json_url_gets_the_title_and_body(
    provider: AppriseProvider, server: LocalHttpServer
) -> None:
    result = await provider.send(message(json_url(server)))

    [request] = server.received()
    assert request.method == "POST"
    assert request.path == "/chat/hook"
    sent = request.json()
    assert sent["title"] == "Deploy finished"
    assert sent["message"] == "build 42 is live <b>not html</b>"
    assert result.provider == "chat"
    assert result.provider_message_id is None


async def test_a_server_error_is_transient_and_the_url_secret_stays_out(
    provider: AppriseProvider, server: LocalHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_next(1, Response(500, LEAK.encode()))
    url = f"json://herald:{PASSWORD}@{server.host}:{server.port}/chat/hook"
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(message(url))

    assert len(server.received()) == 1
    assert str(caught.value) == f"apprise: json://{server.host}: notification failure"
    assert LEAK not in str(caught.value)
    # Apprise's own log lines: warnings only, none with the password.
    assert PASSWORD not in caplog.text
    apprise_records = [r for r in caplog.records if r.name.startswith("apprise")]
    assert apprise_records, "Apprise's warning about the failure should still be logged"
    assert all(r.levelno >= logging.WARNING for r in apprise_records)


@pytest.mark.parametrize(
    "recipient",
    [
        "nosuchservice://token-ABC123@example.com/channel",
        "slack://token-ABC123/token-ABC123",
        "https://example.com/hooks/token-ABC123",
        "slack://",
        "tgram://",
        "not a url at all",
        "",
    ],
)
async def test_a_url_apprise_does_not_understand_is_permanent(
    provider: AppriseProvider, recipient: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentDeliveryError, match="not a URL Apprise can use") as caught:
        await provider.send(message(recipient))
    assert "token-ABC123" not in str(caught.value)
    # Apprise quotes such URLs in its error lines; the provider's log filter redacts them.
    assert "token-ABC123" not in caplog.text


def test_errors_keep_only_the_scheme_and_a_real_host() -> None:
    assert redact("slack://T0000/B0000/XXXXSECRET") == "slack://"
    assert redact("tgram://123456:BOT-TOKEN/987") == "tgram://"
    assert redact("discord://webhook_id/webhook_token") == "discord://"
    assert redact(f"json://user:{PASSWORD}@chat.example.com:8080/x") == "json://chat.example.com"
    assert redact("https://hooks.slack.com/services/T/B/SECRET") == "https://hooks.slack.com"
    assert redact("no scheme here") == "a URL without a scheme"


async def test_a_redirect_is_not_followed(
    provider: AppriseProvider, server: LocalHttpServer
) -> None:
    with running(LocalHttpServer()) as elsewhere:
        server.fail_next(1, Response(302, b"", {"Location": f"{elsewhere.url}/stolen"}))
        with pytest.raises(TransientDeliveryError):
            await provider.send(message(json_url(server)))
        assert elsewhere.requests == []


async def test_a_slow_service_times_out_as_transient() -> None:
    chat = AppriseProvider("chat", AppriseConfig(timeout_seconds=0.3), outbound=LOOPBACK)
    await chat.start()
    with running(SlowServer(delay=10.0)) as slow:  # far beyond the timeout
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError, match="timeout"):
            await chat.send(message(json_url(slow)))
        assert time.monotonic() - started < 5
    await chat.close()


async def test_the_event_loop_keeps_running_during_a_send(provider: AppriseProvider) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    with running(SlowServer(delay=1.0)) as slow:
        ticker = asyncio.create_task(tick(), name="ticker")
        try:
            await provider.send(message(json_url(slow)))
        finally:
            ticker.cancel()
    assert ticks >= 5


async def test_nothing_to_say_is_permanent(
    provider: AppriseProvider, server: LocalHttpServer
) -> None:
    with pytest.raises(PermanentDeliveryError, match="nothing to send"):
        await provider.send(message(json_url(server), subject=None, body=""))
    assert server.requests == []


def test_the_provider_follows_the_conventions() -> None:
    chat = AppriseProvider("chat", AppriseConfig())
    assert (chat.name, chat.channel, chat.concurrency) == ("chat", "apprise", 4)
    with pytest.raises(ValueError, match="extra"):
        AppriseConfig.model_validate({"type": "apprise", "url": "slack://x"})
