"""The Twilio SMS provider against a fake Twilio speaking the real API over loopback HTTP."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from herald.channels.base import OutboundMessage
from herald.channels.twilio import TwilioConfig, TwilioProvider
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from tests.fakes.http_server import Request, Response, running
from tests.fakes.twilio import FakeTwilio, twilio_error
from tests.services import free_port

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tw-auth-token-4f1c9e77d2"
FROM = "+15005550006"
SERVICE = "MG" + "fedcba9876543210" * 2
TO = "+14155550123"


def sms(delivery_id: str = "dlv-1", recipient: str = TO, **kw: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf-1",
        "channel": "sms",
        "recipient": recipient,
        "subject": "Your code",
        "body": "Your Herald code is 123456",
        "attempt": 1,
    }
    fields.update(kw)
    return OutboundMessage(**fields)


def config(base_url: str, **kw: Any) -> TwilioConfig:
    fields: dict[str, Any] = {
        "type": "twilio",
        "base_url": base_url,
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": FROM,
        "timeout_seconds": 2.0,
    }
    fields.update(kw)
    return TwilioConfig.model_validate(fields)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with running(FakeTwilio(SID, TOKEN)) as server:
        yield server


@pytest.fixture
async def provider(twilio: FakeTwilio) -> AsyncIterator[TwilioProvider]:
    p = TwilioProvider("twilio-main", config(twilio.url))
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def test_send_posts_what_twilio_expects_and_returns_the_message_sid(
    twilio: FakeTwilio, provider: TwilioProvider
) -> None:
    result = await provider.send(sms())

    assert result.provider == "twilio-main"
    assert result.provider_message_id is not None
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.provider_message_id)
    [request] = twilio.received()
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected_auth}"
    assert request.headers["i-twilio-idempotency-token"] == "dlv-1"
    # SMS has no subject: only the body goes out.
    assert request.form() == {"To": TO, "From": FROM, "Body": "Your Herald code is 123456"}
    [message] = twilio.messages
    assert (message.sid, message.to, message.from_) == (result.provider_message_id, TO, FROM)


async def test_a_messaging_service_replaces_the_from_number(twilio: FakeTwilio) -> None:
    p = TwilioProvider("svc", config(twilio.url, from_number=None, messaging_service_sid=SERVICE))
    await p.start()
    try:
        await p.send(sms())
    finally:
        await p.close()
    assert twilio.received()[0].form() == {
        "To": TO,
        "MessagingServiceSid": SERVICE,
        "Body": "Your Herald code is 123456",
    }


async def test_a_retried_delivery_is_one_message_with_one_sid(
    twilio: FakeTwilio, provider: TwilioProvider
) -> None:
    first = await provider.send(sms("dlv-same"))
    again = await provider.send(sms("dlv-same", attempt=2))
    other = await provider.send(sms("dlv-other"))

    assert first.provider_message_id == again.provider_message_id
    assert other.provider_message_id != first.provider_message_id
    assert len(twilio.received()) == 3
    assert [m.idempotency_token for m in twilio.messages] == ["dlv-same", "dlv-other"]


async def test_a_number_twilio_refuses_is_permanent_with_twilios_code(
    twilio: FakeTwilio, provider: TwilioProvider
) -> None:
    twilio.refuse("+14155550999")
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(sms(recipient="+14155550999"))
    assert "21211" in str(caught.value)
    assert "Invalid 'To' Phone Number" in str(caught.value)
    assert twilio.messages == []


@pytest.mark.parametrize("recipient", ["4155550123", "+0123456789", "+1415", "+1 415 555 0123"])
async def test_a_recipient_that_is_not_e164_fails_before_any_request(
    twilio: FakeTwilio, provider: TwilioProvider, recipient: str
) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"E\.164"):
        await provider.send(sms(recipient=recipient))
    assert twilio.received() == []


async def test_a_404_is_permanent(twilio: FakeTwilio, provider: TwilioProvider) -> None:
    twilio.fail_next(1, twilio_error(404, 20404, "The requested resource was not found"))
    with pytest.raises(PermanentDeliveryError, match="20404"):
        await provider.send(sms())


async def test_throttling_is_transient_with_twilios_retry_after(
    twilio: FakeTwilio, provider: TwilioProvider
) -> None:
    twilio.fail_next(1, twilio_error(429, 20429, "Too Many Requests", **{"Retry-After": "7"}))
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(sms())
    assert caught.value.retry_after == 7
    assert "20429" in str(caught.value)
    # The next attempt goes through.
    assert (await provider.send(sms())).provider_message_id


async def test_a_503_is_transient(twilio: FakeTwilio, provider: TwilioProvider) -> None:
    twilio.fail_next(1, Response(503, b"Service Unavailable", {"Content-Type": "text/plain"}))
    with pytest.raises(TransientDeliveryError, match="503") as caught:
        await provider.send(sms())
    assert caught.value.retry_after is None


async def test_a_stopped_server_is_transient(twilio: FakeTwilio, provider: TwilioProvider) -> None:
    twilio.stop()
    with pytest.raises(TransientDeliveryError, match="twilio"):
        await provider.send(sms())


async def test_a_timeout_is_transient() -> None:
    release = threading.Event()

    class Slow(FakeTwilio):
        def answer(self, request: Request) -> Response:
            release.wait(5)
            return super().answer(request)

    with running(Slow(SID, TOKEN)) as slow:
        p = TwilioProvider("slow", config(slow.url, timeout_seconds=0.2))
        await p.start()
        started = time.monotonic()
        try:
            with pytest.raises(TransientDeliveryError, match="Timeout"):
                await p.send(sms())
        finally:
            release.set()
            await p.close()
    assert time.monotonic() - started < 2


async def test_rejected_credentials_are_transient_and_the_token_stays_secret(
    twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-0b9d5aa1"
    caplog.set_level(logging.DEBUG)
    p = TwilioProvider("twilio-main", config(twilio.url, auth_token=wrong))
    await p.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await p.send(sms())
    finally:
        await p.close()

    text = str(caught.value)
    assert "401" in text
    assert "credentials" in text
    assert "20003" in text
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for shown in (text, repr(caught.value), repr(p), repr(p.config), str(p.config), logged):
        assert wrong not in shown
        assert TOKEN not in shown
    assert twilio.messages == []


async def test_connection_refused_without_any_server_is_transient() -> None:
    p = TwilioProvider("nowhere", config(f"http://127.0.0.1:{free_port()}"))
    await p.start()
    try:
        with pytest.raises(TransientDeliveryError):
            await p.send(sms())
    finally:
        await p.close()


# -- configuration ---------------------------------------------------------------------------


def _config(**kw: Any) -> TwilioConfig:
    fields: dict[str, Any] = {"type": "twilio", "account_sid": SID, "auth_token": TOKEN}
    fields.update(kw)
    return TwilioConfig.model_validate(fields)


def test_config_defaults() -> None:
    c = _config(from_number=FROM)
    assert c.base_url == "https://api.twilio.com"
    assert (c.timeout_seconds, c.concurrency) == (10.0, 8)
    p = TwilioProvider("sms", c)
    assert (p.name, p.channel, p.concurrency) == ("sms", "sms", 8)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="no-sender"),
        pytest.param({"from_number": FROM, "messaging_service_sid": SERVICE}, id="two-senders"),
        pytest.param({"from_number": FROM, "account_sid": "nope"}, id="bad-sid"),
        pytest.param({"from_number": FROM, "auth_token": ""}, id="empty-token"),
        pytest.param({"from_number": FROM, "base_url": "ftp://x"}, id="bad-url"),
        pytest.param({"from_number": FROM, "region": "ie1"}, id="unknown-field"),
        pytest.param({"from_number": FROM, "concurrency": 0}, id="no-concurrency"),
        pytest.param({"from_number": FROM, "type": "fcm"}, id="wrong-type"),
        pytest.param({"messaging_service_sid": "MGnope"}, id="bad-service-sid"),
        pytest.param({"from_number": "not a number!"}, id="bad-sender"),
    ],
)
def test_invalid_configs_are_rejected_without_quoting_the_token(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        _config(**fields)
    assert TOKEN not in str(caught.value)


def test_the_token_is_hidden_in_reprs() -> None:
    c = _config(from_number=FROM)
    assert TOKEN not in repr(c)
    assert TOKEN not in str(c.model_dump())
    assert TOKEN not in repr(TwilioProvider("sms", c))


async def test_each_text_asks_for_status_callbacks_at_herald_unless_told_not_to(
    twilio: FakeTwilio,
) -> None:
    asking = TwilioProvider("tw main", config(twilio.url), public_url="https://h.example/")
    quiet = TwilioProvider(
        "tw-quiet", config(twilio.url, status_callback=False), public_url="https://h.example"
    )
    for p in (asking, quiet):
        await p.start()
        try:
            await p.send(sms(delivery_id=f"dlv-{p.name}"))
        finally:
            await p.close()
    callbacks = [m.status_callback for m in twilio.messages]
    assert callbacks == [
        "https://h.example/api/v1/receipts/twilio/tw%20main?delivery=dlv-tw%20main",
        None,
    ]
