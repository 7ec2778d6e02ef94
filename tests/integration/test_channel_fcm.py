"""The FCM push provider against a fake Google token endpoint and FCM v1 API over loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from herald.channels.base import OutboundMessage
from herald.channels.fcm import FcmConfig, FcmProvider
from herald.errors import (
    AddressGoneError,
    ConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from tests.fakes.fcm import SCOPE, FakeFcm, fcm_error, oauth_error
from tests.fakes.http_server import Response, running
from tests.services import free_port

PROJECT = "herald-test"
EMAIL = "herald@herald-test.iam.gserviceaccount.com"
DEVICE = "dQw4w9WgXcQ:APA91bH-device-token"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_pem(key: rsa.RSAPrivateKey) -> str:
    return _pem(key)


def service_account(pem: str, token_uri: str, **extra: Any) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": EMAIL,
            "token_uri": token_uri,
            **extra,
        }
    )


def push(delivery_id: str = "dlv-1", recipient: str = DEVICE, **kw: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf-1",
        "channel": "push",
        "recipient": recipient,
        "subject": "Order shipped",
        "body": "Your parcel is on its way",
        "attempt": 1,
    }
    fields.update(kw)
    return OutboundMessage(**fields)


@pytest.fixture
def fcm(key: rsa.RSAPrivateKey) -> Iterator[FakeFcm]:
    with running(FakeFcm(key.public_key(), EMAIL, PROJECT)) as server:
        yield server


def config(fake: FakeFcm, pem: str, **kw: Any) -> FcmConfig:
    fields: dict[str, Any] = {
        "type": "fcm",
        "project_id": PROJECT,
        "service_account_json": service_account(pem, fake.token_uri),
        "endpoint": fake.url,
        "timeout_seconds": 2.0,
    }
    fields.update(kw)
    return FcmConfig.model_validate(fields)


@pytest.fixture
async def provider(fcm: FakeFcm, key_pem: str) -> AsyncIterator[FcmProvider]:
    p = FcmProvider("fcm-main", config(fcm, key_pem))
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def test_send_authenticates_and_posts_a_v1_message(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    result = await provider.send(
        push(data={"order": "A-17", "items": 3, "gift": True, "meta": {"a": [1, 2]}, "n": None})
    )

    [push_] = fcm.pushes
    assert result.provider == "fcm-main"
    assert result.provider_message_id == push_.name
    assert push_.name.startswith(f"projects/{PROJECT}/messages/")

    [token_request] = fcm.token_requests()
    form = token_request.form()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    [claims] = fcm.assertions
    assert claims["iss"] == EMAIL
    assert claims["scope"] == SCOPE
    assert claims["aud"] == fcm.token_uri
    assert claims["exp"] - claims["iat"] == 3600

    [send_request] = fcm.send_requests()
    assert send_request.path == f"/v1/projects/{PROJECT}/messages:send"
    assert send_request.headers["authorization"] == f"Bearer {push_.access_token}"
    assert send_request.headers["content-type"] == "application/json"
    assert send_request.json() == {
        "message": {
            "token": DEVICE,
            "notification": {"title": "Order shipped", "body": "Your parcel is on its way"},
            "data": {
                "order": "A-17",
                "items": "3",
                "gift": "true",
                "meta": '{"a":[1,2]}',
                "n": "null",
                "herald_notification_id": "ntf-1",
                "herald_delivery_id": "dlv-1",
            },
            "android": {"priority": "NORMAL"},
            "apns": {"headers": {"apns-priority": "5"}},
        }
    }


async def test_high_priority_and_no_subject(fcm: FakeFcm, provider: FcmProvider) -> None:
    await provider.send(push(priority="high", subject=None))
    message = fcm.pushes[0].message
    assert message["android"] == {"priority": "HIGH"}
    assert message["apns"] == {"headers": {"apns-priority": "10"}}
    assert message["notification"] == {"body": "Your parcel is on its way"}


async def test_one_access_token_serves_many_sends(fcm: FakeFcm, provider: FcmProvider) -> None:
    await asyncio.gather(*(provider.send(push(f"dlv-{i}")) for i in range(6)))
    await provider.send(push("dlv-last"))

    assert len(fcm.token_requests()) == 1
    assert len(fcm.pushes) == 7
    assert len({p.access_token for p in fcm.pushes}) == 1


async def test_a_token_near_its_expiry_is_refreshed_before_use(
    key: rsa.RSAPrivateKey, key_pem: str
) -> None:
    # 30 s of life is inside the 60 s refresh margin: every send needs a new token.
    with running(FakeFcm(key.public_key(), EMAIL, PROJECT, expires_in=30)) as fake:
        p = FcmProvider("fcm", config(fake, key_pem))
        await p.start()
        try:
            await p.send(push("a"))
            await p.send(push("b"))
        finally:
            await p.close()
    assert len(fake.token_requests()) == 2
    assert len(fake.send_requests()) == 2


@pytest.mark.parametrize("how", ["revoke_all", "expire_all"])
async def test_a_rejected_token_is_replaced_and_the_send_retried_once(
    fcm: FakeFcm, provider: FcmProvider, how: str
) -> None:
    await provider.send(push("before"))
    getattr(fcm, how)()

    result = await provider.send(push("after"))

    assert result.provider_message_id == fcm.pushes[-1].name
    assert len(fcm.token_requests()) == 2
    # send, then the 401, a fresh token and the one retry.
    assert [r.path.rsplit("/", 1)[-1] for r in fcm.requests] == [
        "token",
        "messages:send",
        "messages:send",
        "token",
        "messages:send",
    ]
    assert fcm.pushes[0].access_token != fcm.pushes[1].access_token


async def test_a_token_rejected_twice_is_transient_after_one_retry(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    await provider.send(push("before"))
    fcm.fail_sends(2, fcm_error(401, "Request had invalid authentication credentials."))
    with pytest.raises(TransientDeliveryError, match="credentials"):
        await provider.send(push("rejected"))
    # First send: token + send; second: send (401), token, send (401); no third try.
    assert [r.path.split("/")[-1] for r in fcm.requests] == [
        "token",
        "messages:send",
        "messages:send",
        "token",
        "messages:send",
    ]


async def test_an_unregistered_device_is_a_gone_address(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    fcm.unregister("stale-device")
    with pytest.raises(AddressGoneError, match="UNREGISTERED"):
        await provider.send(push(recipient="stale-device"))
    assert fcm.pushes == []


async def test_an_invalid_argument_is_a_gone_address_only_when_it_names_the_token(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    about_token = fcm_error(400, "The registration token is not valid", "INVALID_ARGUMENT")
    body = json.loads(about_token.body)
    body["error"]["details"].append(
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token", "description": "Invalid token"}],
        }
    )
    fcm.fail_sends(1, Response.of_json(400, body))
    with pytest.raises(AddressGoneError):
        await provider.send(push())
    fcm.fail_sends(1, fcm_error(400, "Invalid JSON payload", "INVALID_ARGUMENT"))
    with pytest.raises(PermanentDeliveryError) as refused:
        await provider.send(push())
    assert not isinstance(refused.value, AddressGoneError)  # the message's fault, not the token's


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (
            fcm_error(400, "The registration token is not valid", "INVALID_ARGUMENT"),
            "INVALID_ARGUMENT",
        ),
        (fcm_error(403, "SenderId mismatch", "SENDER_ID_MISMATCH"), "SENDER_ID_MISMATCH"),
        (fcm_error(404, "Requested entity was not found."), "NOT_FOUND"),
    ],
)
async def test_fcm_refusals_are_permanent_and_named(
    fcm: FakeFcm, provider: FcmProvider, answer: Response, code: str
) -> None:
    fcm.fail_sends(1, answer)
    with pytest.raises(PermanentDeliveryError, match=code):
        await provider.send(push())


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        (fcm_error(429, "Quota exceeded", "QUOTA_EXCEEDED", **{"Retry-After": "7"}), 7),
        (fcm_error(503, "The service is unavailable", "UNAVAILABLE"), None),
        (fcm_error(500, "Internal error", "INTERNAL", **{"Retry-After": "2"}), 2),
        (Response(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}), None),
    ],
)
async def test_fcm_trouble_is_transient_with_retry_after(
    fcm: FakeFcm, provider: FcmProvider, answer: Response, retry_after: float | None
) -> None:
    fcm.fail_sends(1, answer)
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(push())
    assert caught.value.retry_after == retry_after
    assert str(answer.status) in str(caught.value)


async def test_a_failing_token_endpoint_is_transient(fcm: FakeFcm, provider: FcmProvider) -> None:
    fcm.fail_next(1, oauth_error("temporarily_unavailable", "try later", status=503))
    with pytest.raises(TransientDeliveryError, match="token endpoint"):
        await provider.send(push())
    assert fcm.send_requests() == []
    # The failure is not cached: the next send gets a token and goes out.
    await provider.send(push())
    assert len(fcm.pushes) == 1


async def test_a_stopped_server_is_transient(fcm: FakeFcm, provider: FcmProvider) -> None:
    fcm.stop()
    with pytest.raises(TransientDeliveryError, match="token endpoint"):
        await provider.send(push())


async def test_an_unreachable_fcm_endpoint_is_transient(fcm: FakeFcm, key_pem: str) -> None:
    p = FcmProvider("fcm", config(fcm, key_pem, endpoint=f"http://127.0.0.1:{free_port()}"))
    await p.start()
    try:
        with pytest.raises(TransientDeliveryError, match="ConnectError"):
            await p.send(push())
    finally:
        await p.close()
    assert len(fcm.token_requests()) == 1


async def test_a_key_google_does_not_know_is_transient_and_stays_secret(
    fcm: FakeFcm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p = FcmProvider("fcm-main", config(fcm, stranger))
    await p.start()
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await p.send(push())
    finally:
        await p.close()

    text = str(caught.value)
    assert "invalid_grant" in text
    assert "400" in text
    assert fcm.send_requests() == []
    body = "".join(stranger.splitlines()[1:-1])[:40]
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for shown in (text, repr(caught.value), repr(p), repr(p.config), logged):
        assert body not in shown
        assert "PRIVATE KEY" not in shown


async def test_reserved_data_keys_fail_before_any_request(
    fcm: FakeFcm, provider: FcmProvider
) -> None:
    with pytest.raises(PermanentDeliveryError, match="reserved"):
        await provider.send(push(data={"google.c.a.e": "1"}))
    assert fcm.requests == []


async def test_the_service_account_can_come_from_a_file(
    fcm: FakeFcm, key_pem: str, tmp_path: Path
) -> None:
    path = tmp_path / "sa.json"
    path.write_text(service_account(key_pem, "https://oauth2.googleapis.com/token"))
    # token_uri overrides the service account's own.
    c = FcmConfig(
        type="fcm",
        project_id=PROJECT,
        service_account_file=path,
        endpoint=fcm.url,
        token_uri=fcm.token_uri,
    )
    p = FcmProvider("fcm-file", c)
    await p.start()
    try:
        result = await p.send(push())
    finally:
        await p.close()
    assert result.provider_message_id == fcm.pushes[0].name


# -- configuration ---------------------------------------------------------------------------


def test_config_defaults(key_pem: str) -> None:
    c = FcmConfig(
        type="fcm",
        project_id=PROJECT,
        service_account_json=service_account(key_pem, "https://oauth2.googleapis.com/token"),
    )
    assert c.endpoint == "https://fcm.googleapis.com"
    assert (c.token_uri, c.timeout_seconds, c.concurrency) == (None, 10.0, 8)
    p = FcmProvider("push", c)
    assert (p.name, p.channel, p.concurrency) == ("push", "push", 8)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"service_account_json": None}, id="no-credentials"),
        pytest.param({"service_account_file": "/etc/sa.json"}, id="two-credentials"),
        pytest.param({"service_account_json": "{not json"}, id="not-json"),
        pytest.param({"service_account_json": "[]"}, id="not-an-object"),
        pytest.param({"sa": {"client_email": None}}, id="no-email"),
        pytest.param({"sa": {"token_uri": None}}, id="no-token-uri"),
        pytest.param({"sa": {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA"}}, id="bad-pem"),
        pytest.param({"project_id": ""}, id="no-project"),
        pytest.param({"endpoint": "fcm.googleapis.com"}, id="bad-endpoint"),
        pytest.param({"api_key": "x"}, id="unknown-field"),
        pytest.param({"timeout_seconds": 0}, id="no-timeout"),
    ],
)
def test_invalid_configs_are_rejected_without_quoting_the_key(
    key_pem: str, change: dict[str, Any]
) -> None:
    info = json.loads(service_account(key_pem, "https://oauth2.googleapis.com/token"))
    info.update(change.pop("sa", {}))
    fields: dict[str, Any] = {
        "type": "fcm",
        "project_id": PROJECT,
        "service_account_json": json.dumps({k: v for k, v in info.items() if v is not None}),
        **change,
    }
    with pytest.raises(ValidationError) as caught:
        FcmConfig.model_validate(fields)
    assert "PRIVATE KEY" not in str(caught.value)
    assert key_pem.splitlines()[1] not in str(caught.value)


def test_a_missing_service_account_file_is_a_config_error(tmp_path: Path) -> None:
    c = FcmConfig(type="fcm", project_id=PROJECT, service_account_file=tmp_path / "absent.json")
    with pytest.raises(ConfigError, match=r"absent\.json"):
        FcmProvider("fcm", c)


def test_a_service_account_file_with_a_bad_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_text(service_account("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END", "http://x/t"))
    c = FcmConfig(type="fcm", project_id=PROJECT, service_account_file=path)
    with pytest.raises(ConfigError, match="private_key") as caught:
        FcmProvider("fcm", c)
    assert "QUJD" not in str(caught.value)


def test_the_key_is_hidden_in_reprs(key_pem: str) -> None:
    c = FcmConfig(
        type="fcm", project_id=PROJECT, service_account_json=service_account(key_pem, "http://t")
    )
    line = key_pem.splitlines()[1]
    assert line not in repr(c)
    assert line not in str(c.model_dump())
    assert line not in repr(FcmProvider("fcm", c))
