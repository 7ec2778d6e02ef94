"""The webhook provider against a real receiver that verifies signatures the documented way."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from herald.channels.base import OutboundMessage
from herald.channels.webhook import (
    SigningSecrets,
    WebhookConfig,
    WebhookProvider,
    verify_signature,
)
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from herald.outbound import OutboundPolicy
from tests.conftest import TEST_OUTBOUND_ALLOW
from tests.fakes.http_server import Response, running
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.services import free_port

SECRET = "whsec_current_0123456789"
OLD_SECRET = "whsec_previous_abcdef"
# Marks a receiver's answer body: it must never reach an error's text.
LEAK = "RECEIVER-BODY-must-not-leak"


def fixed(*secrets: str) -> SigningSecrets:
    async def lookup(message: OutboundMessage) -> Sequence[str]:
        return list(secrets)

    return lookup


@asynccontextmanager
async def provider(
    *secrets: str, timeout: float = 5.0, lookup: SigningSecrets | None = None
) -> AsyncIterator[WebhookProvider]:
    hooks = WebhookProvider(
        "hooks",
        WebhookConfig(timeout_seconds=timeout),
        lookup or fixed(*secrets),
        outbound=OutboundPolicy.parse(TEST_OUTBOUND_ALLOW),  # the receivers are on loopback
    )
    await hooks.start()
    try:
        yield hooks
    finally:
        await hooks.close()


def message(url: str, **overrides: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "webhook",
        "recipient": url,
        "subject": "Order shipped",
        "body": "Your order is on its way",
        "attempt": 1,
        "data": {"order": 42, "items": ["book"]},
        "user_id": "usr-1",
        "category": "orders",
        "priority": "high",
    }
    values.update(overrides)
    return OutboundMessage(**values)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver([SECRET])
    with running(server):
        yield server


def signature_of(receiver: WebhookReceiver, index: int = 0) -> tuple[bytes, str]:
    request = receiver.requests[index]
    return request.body, request.headers["herald-signature"]


async def test_a_delivery_is_signed_and_verifies_with_the_documented_recipe(
    receiver: WebhookReceiver,
) -> None:
    async with provider(SECRET) as hooks:
        result = await hooks.send(message(f"{receiver.url}/hooks/herald"))

    assert [r.path for r in receiver.verified] == ["/hooks/herald"]
    assert receiver.unverified == []
    request = receiver.verified[0]
    assert result.provider == "hooks"
    assert result.provider_message_id == "rcv-1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["herald-webhook-id"] == "dlv-1"
    timestamp = request.headers["herald-webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    assert request.headers["herald-signature"].startswith(f"t={timestamp},v1=")
    assert request.json() == {
        "id": "dlv-1",
        "type": "notification",
        "tenant": "default",
        "notification_id": "ntf-1",
        "user_id": "usr-1",
        "channel": "webhook",
        "category": "orders",
        "priority": "high",
        "subject": "Order shipped",
        "body": "Your order is on its way",
        "data": {"order": 42, "items": ["book"]},
        "attempt": 1,
    }
    # Compact with sorted keys: what receivers hash is what a re-serialisation gives.
    canonical = json.dumps(request.json(), separators=(",", ":"), sort_keys=True).encode()
    assert request.body == canonical


async def test_during_a_rotation_receivers_on_the_old_or_the_new_secret_both_verify() -> None:
    on_old, on_new = WebhookReceiver([OLD_SECRET]), WebhookReceiver([SECRET])
    with running(on_old), running(on_new):
        async with provider(SECRET, OLD_SECRET) as hooks:
            await hooks.send(message(on_old.url))
            await hooks.send(message(on_new.url))

        assert len(on_old.verified) == len(on_new.verified) == 1
        body, header = signature_of(on_new)
        assert header.count("v1=") == 2
        assert verify_signature(body, header, SECRET)
        assert verify_signature(body, header, OLD_SECRET)
        assert not verify_signature(body, header, "whsec_someone_else")


async def test_a_tampered_body_a_stale_timestamp_or_a_malformed_header_fail_verification(
    receiver: WebhookReceiver,
) -> None:
    async with provider(SECRET) as hooks:
        await hooks.send(message(receiver.url))
    body, header = signature_of(receiver)
    timestamp = int(header.split(",")[0].removeprefix("t="))

    assert verify_signature(body, header, SECRET, now=timestamp + 299)
    assert not verify_signature(body.replace(b"42", b"43"), header, SECRET)
    assert not verify_signature(body + b" ", header, SECRET)
    assert not verify_signature(body, header, SECRET, now=timestamp + 301)
    assert not verify_signature(body, header, SECRET, now=timestamp - 301)
    assert not verify_signature(body, header, SECRET, tolerance_seconds=10, now=timestamp + 11)
    v1 = header.split(",", 1)[1]
    # The timestamp is signed: moving it forward to look fresh breaks the signature.
    assert not verify_signature(body, f"t={timestamp + 100},{v1}", SECRET, now=timestamp + 100)
    for malformed in (
        "",
        v1,
        f"t={timestamp}",
        f"t=soon,{v1}",
        f"t={timestamp},t={timestamp},{v1}",
        f"t={timestamp},v1",
        f"t={timestamp},{v1[:-1]}é",
        "garbage",
    ):
        assert not verify_signature(body, malformed, SECRET, now=timestamp), malformed


async def test_another_attempt_of_the_same_delivery_is_recognisable_as_a_duplicate(
    receiver: WebhookReceiver,
) -> None:
    async with provider(SECRET) as hooks:
        await hooks.send(message(receiver.url))
        await hooks.send(message(receiver.url))
        await hooks.send(message(receiver.url, delivery_id="dlv-2"))

    assert [r.headers["herald-webhook-id"] for r in receiver.verified] == ["dlv-1", "dlv-2"]
    assert [r.headers["herald-webhook-id"] for r in receiver.duplicates] == ["dlv-1"]
    assert receiver.duplicates[0].body == receiver.verified[0].body


async def test_a_redirect_is_permanent_and_never_followed(receiver: WebhookReceiver) -> None:
    with running(WebhookReceiver([SECRET])) as elsewhere:
        receiver.redirect_to = f"{elsewhere.url}/stolen"
        async with provider(SECRET) as hooks:
            with pytest.raises(PermanentDeliveryError, match=r"HTTP 302.*redirect not followed"):
                await hooks.send(message(receiver.url))
        assert len(receiver.requests) == 1
        assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientDeliveryError),
        (408, TransientDeliveryError),
        (425, TransientDeliveryError),
        (400, PermanentDeliveryError),
        (410, PermanentDeliveryError),
        (422, PermanentDeliveryError),
    ],
)
async def test_the_answer_decides_transient_or_permanent_by_status_without_echoing_it(
    receiver: WebhookReceiver, status: int, error: type[Exception]
) -> None:
    receiver.fail_next(1, Response(status, f"{LEAK} {SECRET}".encode()))
    async with provider(SECRET) as hooks:
        with pytest.raises(error) as caught:
            await hooks.send(message(receiver.url))

    assert type(caught.value) is error
    assert f"HTTP {status}" in str(caught.value)
    assert LEAK not in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_429_is_transient_and_its_retry_after_is_kept(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, Response(429, LEAK.encode(), {"Retry-After": "7"}))
    async with provider(SECRET) as hooks:
        with pytest.raises(TransientDeliveryError) as caught:
            await hooks.send(message(receiver.url))
        assert caught.value.retry_after == 7
        assert LEAK not in str(caught.value)

        # The same delivery goes through once the receiver has caught up.
        result = await hooks.send(message(receiver.url, attempt=2))
    assert result.provider_message_id == "rcv-2"
    assert receiver.verified[0].json()["attempt"] == 2


async def test_a_receiver_slower_than_the_timeout_is_transient(
    receiver: WebhookReceiver,
) -> None:
    receiver.delay = 10.0  # far beyond the timeout, so a loaded machine cannot blur the two
    async with provider(SECRET, timeout=0.2) as hooks:
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError):
            await hooks.send(message(receiver.url))
    assert time.monotonic() - started < 5


async def test_a_receiver_that_is_down_is_transient() -> None:
    async with provider(SECRET) as hooks:
        with pytest.raises(TransientDeliveryError):
            await hooks.send(message(f"http://127.0.0.1:{free_port()}/hook"))


async def test_a_large_answer_is_not_read_whole(receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, Response(200, b"x" * (200 * 1024), {"X-Request-Id": "big"}))
    async with provider(SECRET) as hooks:
        result = await hooks.send(message(receiver.url))
        assert result.provider_message_id == "big"
        # The provider is still fine for the next message.
        assert (await hooks.send(message(receiver.url))).provider_message_id == "rcv-2"


async def test_without_a_signing_secret_nothing_is_sent(receiver: WebhookReceiver) -> None:
    async with provider() as hooks:
        with pytest.raises(PermanentDeliveryError, match="no signing secret"):
            await hooks.send(message(receiver.url))
    async with provider("") as hooks:
        with pytest.raises(PermanentDeliveryError, match="no signing secret"):
            await hooks.send(message(receiver.url))
    assert receiver.requests == []


async def test_a_failing_secret_lookup_is_transient(receiver: WebhookReceiver) -> None:
    async def broken(message: OutboundMessage) -> Sequence[str]:
        raise ConnectionError("vault unreachable")

    async with provider(lookup=broken) as hooks:
        with pytest.raises(TransientDeliveryError, match="signing secrets unavailable"):
            await hooks.send(message(receiver.url))
    assert receiver.requests == []


@pytest.mark.parametrize(
    "recipient", ["not a url", "ftp://files.example.com/drop", "mailto:ops@example.com", ""]
)
async def test_a_recipient_that_is_not_an_http_url_is_permanent(recipient: str) -> None:
    async with provider(SECRET) as hooks:
        with pytest.raises(PermanentDeliveryError, match="webhook"):
            await hooks.send(message(recipient))


async def test_data_that_is_not_json_is_permanent(receiver: WebhookReceiver) -> None:
    async with provider(SECRET) as hooks:
        with pytest.raises(PermanentDeliveryError, match="JSON"):
            await hooks.send(message(receiver.url, data={"when": object()}))
    assert receiver.requests == []


def test_the_config_and_provider_show_no_secret() -> None:
    hooks = WebhookProvider("hooks", WebhookConfig(), fixed(SECRET))
    assert SECRET not in repr(hooks)
    assert (hooks.channel, hooks.concurrency) == ("webhook", 16)
    with pytest.raises(ValueError, match="extra"):
        WebhookConfig.model_validate({"type": "webhook", "secret": SECRET})


async def test_a_receiver_on_another_secret_refuses_and_that_is_permanent(
    receiver: WebhookReceiver,
) -> None:
    async with provider("whsec_someone_else") as hooks:
        with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
            await hooks.send(message(receiver.url))
    assert len(receiver.unverified) == 1
    assert receiver.verified == []
