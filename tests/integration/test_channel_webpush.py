"""The Web Push provider against a local push service that checks VAPID and decrypts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from herald.channels.base import OutboundMessage
from herald.channels.webpush import (
    MAX_PAYLOAD,
    SubscriptionGoneError,
    WebPushConfig,
    WebPushProvider,
    _origin,
)
from herald.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from herald.outbound import OutboundPolicy
from tests.conftest import TEST_OUTBOUND_ALLOW
from tests.fakes.http_server import Response, running
from tests.fakes.push_service import PushService
from tests.services import unavailable

SUBJECT = "mailto:ops@herald.example.com"
LEAK = "PUSH-SERVICE-BODY-must-not-leak"
# The fake push service listens on loopback.
LOOPBACK = OutboundPolicy.parse(TEST_OUTBOUND_ALLOW)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def raw_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The form web-push libraries print: the 32-byte private value, base64url."""
    value = key.private_numbers().private_value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def config(key: str, **overrides: Any) -> WebPushConfig:
    values: dict[str, Any] = {
        "vapid_private_key": SecretStr(key),
        "vapid_subject": SUBJECT,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return WebPushConfig(**values)


def message(recipient: str, **overrides: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "webpush",
        "recipient": recipient,
        "subject": "Order shipped",
        "body": "Your order is on its way — Ünïcode too",
        "attempt": 1,
        "data": {"url": "/orders/42"},
        "priority": "high",
    }
    values.update(overrides)
    return OutboundMessage(**values)


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture
async def provider(vapid_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[WebPushProvider]:
    push = WebPushProvider("push", config(pem(vapid_key)), outbound=LOOPBACK)
    await push.start()
    yield push
    await push.close()


@pytest.fixture
def service(provider: WebPushProvider) -> Iterator[PushService]:
    server = PushService(application_server_key=provider.public_key)
    with running(server):
        yield server


async def test_the_payload_decrypts_to_what_was_sent_and_vapid_verifies(
    provider: WebPushProvider, service: PushService
) -> None:
    browser = service.subscribe()
    result = await provider.send(message(browser.to_json()))

    assert service.rejections == []
    [push] = service.pushes
    assert push.payload == {
        "title": "Order shipped",
        "body": "Your order is on its way — Ünïcode too",
        "data": {"url": "/orders/42"},
        "notification_id": "ntf-1",
        "delivery_id": "dlv-1",
    }
    assert result.provider == "push"
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith(f"{service.url}/message/")
    assert push.claims["aud"] == service.url
    assert push.claims["sub"] == SUBJECT
    assert time.time() < push.claims["exp"] <= time.time() + 24 * 3600
    assert push.headers["ttl"] == "86400"
    assert push.headers["urgency"] == "high"
    assert push.headers["content-encoding"] == "aes128gcm"
    assert "topic" not in push.headers


async def test_an_ipv6_endpoint_is_signed_for_its_bracketed_origin(
    provider: WebPushProvider,
) -> None:
    try:
        server = PushService(application_server_key=provider.public_key, host="::1")
    except OSError as exc:  # a host or container without IPv6
        unavailable("the IPv6 loopback (::1)", str(exc))
    with running(server):
        browser = server.subscribe()
        assert browser.endpoint.startswith(f"http://[::1]:{server.port}/push/")
        await provider.send(message(browser.to_json()))

    assert server.rejections == []  # the service checks aud against its own origin
    [push] = server.pushes
    assert push.claims["aud"] == f"http://[::1]:{server.port}"
    assert push.payload["delivery_id"] == "dlv-1"


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://[2001:db8::1]/push/abc", "https://[2001:db8::1]"),
        ("https://[2001:db8::1]:443/push/abc", "https://[2001:db8::1]"),
        ("https://[::1]:8443/push/abc", "https://[::1]:8443"),
        ("https://push.example.com/wpush/v2/abc", "https://push.example.com"),
        ("https://push.example.com:8443/abc", "https://push.example.com:8443"),
    ],
)
def test_the_vapid_audience_is_the_endpoint_origin(endpoint: str, origin: str) -> None:
    assert _origin(httpx.URL(endpoint)) == origin


async def test_each_message_is_encrypted_afresh(
    provider: WebPushProvider, service: PushService
) -> None:
    browser = service.subscribe()
    await provider.send(message(browser.to_json(), priority="normal"))
    await provider.send(message(browser.to_json(), priority="normal"))

    first, second = service.received("/push/")
    assert first.body != second.body
    assert [p.payload for p in service.pushes] == [service.pushes[0].payload] * 2
    assert [p.headers["urgency"] for p in service.pushes] == ["normal", "normal"]


async def test_the_raw_base64url_key_form_works_too(
    vapid_key: ec.EllipticCurvePrivateKey, provider: WebPushProvider, service: PushService
) -> None:
    other = WebPushProvider(
        "push-raw", config(raw_b64(vapid_key), ttl_seconds=60), outbound=LOOPBACK
    )
    assert other.public_key == provider.public_key
    await other.start()
    try:
        await other.send(message(service.subscribe().to_json()))
    finally:
        await other.close()
    assert [p.headers["ttl"] for p in service.pushes] == ["60"]


async def test_a_token_signed_with_another_key_is_refused_permanently(
    service: PushService,
) -> None:
    stranger = WebPushProvider("stranger", config(pem(new_key())), outbound=LOOPBACK)
    await stranger.start()
    try:
        with pytest.raises(PermanentDeliveryError, match="HTTP 403"):
            await stranger.send(message(service.subscribe().to_json()))
    finally:
        await stranger.close()
    assert service.pushes == []


@pytest.mark.parametrize("status", [404, 410])
async def test_an_expired_subscription_is_permanent(
    provider: WebPushProvider, service: PushService, status: int
) -> None:
    browser = service.subscribe()
    if status == 410:
        service.gone(browser)
    else:
        browser.endpoint += "-unknown"
    with pytest.raises(SubscriptionGoneError, match="subscription expired") as caught:
        await provider.send(message(browser.to_json()))
    assert isinstance(caught.value, PermanentDeliveryError)


async def test_429_is_transient_with_its_retry_after(
    provider: WebPushProvider, service: PushService
) -> None:
    browser = service.subscribe()
    service.fail_next(1, Response(429, LEAK.encode(), {"Retry-After": "30"}))
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(message(browser.to_json()))
    assert caught.value.retry_after == 30
    assert LEAK not in str(caught.value)

    await provider.send(message(browser.to_json(), attempt=2))
    assert len(service.pushes) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientDeliveryError),
        (503, TransientDeliveryError),
        (400, PermanentDeliveryError),
        (403, PermanentDeliveryError),
        (413, PermanentDeliveryError),
        (301, PermanentDeliveryError),
    ],
)
async def test_refusals_are_classified_by_status_without_echoing_the_body(
    provider: WebPushProvider, service: PushService, status: int, error: type[Exception]
) -> None:
    service.fail_next(1, Response(status, LEAK.encode(), {"Location": service.url}))
    with pytest.raises(error) as caught:
        await provider.send(message(service.subscribe().to_json()))
    assert type(caught.value) is error
    assert f"HTTP {status}" in str(caught.value)
    assert LEAK not in str(caught.value)
    assert len(service.requests) == 1


def subscription_variants(good: dict[str, Any]) -> list[str]:
    keys = good["keys"]
    return [
        "not json",
        "[]",
        json.dumps({"endpoint": good["endpoint"]}),
        json.dumps({"keys": keys}),
        json.dumps({**good, "endpoint": "ftp://push.example.com/x"}),
        json.dumps({**good, "endpoint": "http://push.example.com/x"}),
        json.dumps({**good, "endpoint": 42}),
        json.dumps({**good, "keys": {**keys, "p256dh": "!!not base64!!"}}),
        json.dumps({**good, "keys": {**keys, "p256dh": keys["auth"]}}),
        json.dumps({**good, "keys": {**keys, "p256dh": "BA" + "A" * 85}}),  # not on the curve
        json.dumps({**good, "keys": {**keys, "auth": keys["auth"][:-4]}}),
        json.dumps({**good, "keys": {"auth": keys["auth"]}}),
    ]


async def test_a_malformed_subscription_is_permanent_and_nothing_is_sent(
    provider: WebPushProvider, service: PushService
) -> None:
    good = json.loads(service.subscribe().to_json())
    for recipient in subscription_variants(good):
        with pytest.raises(PermanentDeliveryError, match="webpush: the subscription"):
            await provider.send(message(recipient))
    assert service.requests == []


async def test_a_payload_too_large_for_push_is_permanent_and_not_sent(
    provider: WebPushProvider, service: PushService
) -> None:
    browser = service.subscribe()
    with pytest.raises(PermanentDeliveryError, match="exceeds"):
        await provider.send(message(browser.to_json(), body="x" * MAX_PAYLOAD))
    assert service.requests == []

    # The largest payload that fits is accepted (one 4096-byte record).
    overhead = len(
        json.dumps(
            {
                "title": "Order shipped",
                "body": "",
                "data": {"url": "/orders/42"},
                "notification_id": "ntf-1",
                "delivery_id": "dlv-1",
            },
            separators=(",", ":"),
        )
    )
    await provider.send(message(browser.to_json(), body="x" * (MAX_PAYLOAD - overhead)))
    assert service.rejections == []
    assert len(service.received("/push/")[0].body) == 4096


async def test_a_push_service_that_is_down_is_transient(
    vapid_key: ec.EllipticCurvePrivateKey, service: PushService
) -> None:
    browser = service.subscribe()
    service.stop()
    push = WebPushProvider("push", config(pem(vapid_key), timeout_seconds=0.3), outbound=LOOPBACK)
    await push.start()
    try:
        with pytest.raises(TransientDeliveryError):
            await push.send(message(browser.to_json()))
    finally:
        await push.close()


def test_a_bad_vapid_key_is_a_config_error_that_does_not_quote_it() -> None:
    truncated = "-----BEGIN PRIVATE KEY-----\nTOPSECRETAAAA\n-----END PRIVATE KEY-----\n"
    for bad in ("TOP-SECRET-not-a-key", truncated):
        with pytest.raises(ConfigError) as caught:
            WebPushProvider("push", config(bad))
        assert "TOP" not in str(caught.value)
    ed25519 = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ConfigError, match="P-256"):
        WebPushProvider("push", config(ed25519))


def test_the_config_hides_the_key_and_checks_the_subject(
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    key = pem(vapid_key)
    settings = config(key)
    push = WebPushProvider("push", settings)
    assert key not in repr(settings)
    assert key not in repr(push)
    assert (push.channel, push.concurrency) == ("webpush", 16)
    with pytest.raises(ValueError, match="mailto"):
        config(key, vapid_subject="ops@example.com")
