"""Web Push (RFC 8030) to a browser's PushSubscription, encrypted and VAPID-signed.

The payload is encrypted for the subscription's keys with aes128gcm (RFC 8291, via
``http_ece``) and POSTed with httpx to the subscription's endpoint, the push service of the
browser's vendor. The request is signed with VAPID (RFC 8292, via ``py_vapid``): a short-lived
ES256 JWT for the endpoint's origin plus our public key, which must be the
``applicationServerKey`` the page subscribed with (:attr:`WebPushProvider.public_key`).

A 404 or 410 means the subscription is gone for good: :class:`SubscriptionGoneError` tells
the caller to forget it. Like webhooks, the endpoint comes from outside (the browser), so
answers are classified by status code and their bodies never reach an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import http_ece  # type: ignore[import-untyped]
import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException  # type: ignore[import-untyped]
from py_vapid.jwt import sign as sign_jwt  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from herald.channels import http
from herald.channels.base import OutboundMessage, SendResult
from herald.errors import (
    AddressGoneError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from herald.observability.logging import get_logger
from herald.outbound import OutboundPolicy

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings


log = get_logger(__name__)

# Push services take at most 4096 bytes of encrypted body: one aes128gcm record with an
# 86-byte header (salt, record size, our 65-byte key), a delimiter byte and a 16-byte tag.
MAX_PAYLOAD = 4096 - 86 - 1 - 16
# RFC 8292 caps a VAPID token's lifetime at 24 hours; half leaves room for clock skew.
_TOKEN_LIFETIME = 12 * 3600
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class SubscriptionGoneError(AddressGoneError):
    """The push service says the subscription expired or was revoked (HTTP 404/410)."""


def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM, or from the base64url raw (32 bytes) or DER form that
    ``vapid --gen`` / py_vapid and the web-push libraries print. Errors never quote the key."""
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key: Any = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Vapid02.from_string(text).private_key
    except (ValueError, TypeError, UnsupportedAlgorithm, VapidException):
        raise ValueError("not a PEM or base64url EC private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a VAPID key must be an EC P-256 private key")
    return key


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The uncompressed public point, base64url without padding: the applicationServerKey."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class WebPushConfig(BaseModel):
    # The key is checked when the provider is built, not here: pydantic's errors quote the
    # input, and a parent model's settings decide whether they do.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["webpush"] = "webpush"
    vapid_private_key: SecretStr
    vapid_subject: str  # mailto:ops@example.com or https://example.com: push services' contact
    ttl_seconds: int = Field(86400, ge=0, le=28 * 86400)
    timeout_seconds: float = Field(10.0, gt=0)
    concurrency: int = Field(16, ge=1)

    @field_validator("vapid_subject")
    @classmethod
    def _contact(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https://")):
            raise ValueError("must be a mailto: or https:// URL")
        return value


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: httpx.URL
    p256dh: bytes  # the browser's uncompressed P-256 public key
    auth: bytes  # the 16-byte authentication secret


def _b64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a string")
    # Browsers give unpadded base64url; some stores re-encode with standard base64.
    text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_subscription(recipient: str) -> Subscription:
    """``{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}``; anything else is permanent."""
    try:
        raw = json.loads(recipient)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise PermanentDeliveryError("webpush: the subscription is not JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), dict):
        raise PermanentDeliveryError("webpush: the subscription needs endpoint and keys")
    endpoint = raw.get("endpoint")
    try:
        url = httpx.URL(endpoint) if isinstance(endpoint, str) else None
    except httpx.InvalidURL:
        url = None
    # Push services are HTTPS; plain HTTP only reaches a push service on this machine (tests).
    if (
        url is None
        or not url.host
        or not (url.scheme == "https" or (url.scheme == "http" and url.host in _LOOPBACK))
    ):
        raise PermanentDeliveryError("webpush: the subscription endpoint is not an https URL")
    try:
        p256dh = _b64(raw["keys"].get("p256dh"))
        auth = _b64(raw["keys"].get("auth"))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except (ValueError, binascii.Error):
        raise PermanentDeliveryError("webpush: the subscription keys are malformed") from None
    if len(p256dh) != 65 or len(auth) != 16:
        raise PermanentDeliveryError("webpush: the subscription keys have the wrong length")
    return Subscription(url, p256dh, auth)


def encrypt(plaintext: bytes, subscription: Subscription) -> bytes:
    """RFC 8291: a fresh ECDH key pair per message, so no two messages share a key."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        private_key=ephemeral,
        dh=subscription.p256dh,
        auth_secret=subscription.auth,
        version="aes128gcm",
    )
    return body


def _origin(url: httpx.URL) -> str:
    """The endpoint's origin, the VAPID token's audience: an IPv6 host goes in brackets
    (``https://[2001:db8::1]``), and a port only if it is not the scheme's default."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{host}{port}"


def classify(response: httpx.Response) -> DeliveryError:
    """A push service's refusal by status code (see the module docstring for why no body)."""
    status = response.status_code
    if status in (404, 410):
        return SubscriptionGoneError(f"webpush: HTTP {status}: subscription expired")
    if 300 <= status < 400:
        return PermanentDeliveryError(f"webpush: HTTP {status}: redirect not followed")
    if status in http.TRANSIENT_STATUSES or status >= 500:
        return TransientDeliveryError(
            f"webpush: HTTP {status}", retry_after=http.retry_after(response)
        )
    if status == 413:
        return PermanentDeliveryError("webpush: HTTP 413: payload too large")
    return PermanentDeliveryError(f"webpush: HTTP {status}")


class WebPushProvider:
    """Sends to the PushSubscription JSON in ``message.recipient``."""

    channel = "webpush"

    @classmethod
    def from_config(
        cls, name: str, config: WebPushConfig, settings: Settings, deps: Dependencies
    ) -> WebPushProvider:
        return cls(name, config, outbound=settings.outbound_policy())

    def __init__(
        self, name: str, config: WebPushConfig, *, outbound: OutboundPolicy | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.concurrency = config.concurrency
        try:
            key = load_vapid_key(config.vapid_private_key.get_secret_value())
            # py_vapid's sign() checks the claims: signing once here turns a subject it
            # refuses into a startup error (see _authorization for the rest).
            Vapid02(private_key=key).sign(self._claims("https://push.example.com"))
        except (ValueError, VapidException) as exc:
            raise ConfigError(f"webpush provider {name}: vapid: {exc}") from None
        self._key = key
        #: The applicationServerKey pages must pass to pushManager.subscribe().
        self.public_key = public_key_b64(key)
        # Endpoints come from browsers, through users: only public addresses, unless allowed.
        self._http = http.ProviderClient(
            "webpush",
            config.timeout_seconds,
            max_connections=config.concurrency,
            outbound=outbound or OutboundPolicy(),
        )

    def __repr__(self) -> str:
        return f"WebPushProvider(name={self.name!r})"

    async def start(self) -> None:
        self._http.open()
        log.info("webpush.configured", provider=self.name, public_key=self.public_key)

    async def close(self) -> None:
        await self._http.close()

    def _claims(self, audience: str) -> dict[str, Any]:
        return {
            "aud": audience,
            "sub": self.config.vapid_subject,
            "exp": int(time.time()) + _TOKEN_LIFETIME,
        }

    def _authorization(self, audience: str) -> str:
        """``vapid t=<jwt>,k=<key>``, what py_vapid's ``Vapid02.sign()`` makes. Its JWT
        signer is called directly because sign() checks ``aud`` against a pattern with no room
        for an IPv6 host, which an origin writes in brackets (``https://[2001:db8::1]``): the
        audience comes from :func:`_origin` and the subject was checked at startup."""
        token: str = sign_jwt(self._claims(audience), self._key)
        return f"vapid t={token},k={self.public_key}"

    async def send(self, message: OutboundMessage) -> SendResult:
        self._http.get()  # not started: transient, before anything else is looked at
        subscription = parse_subscription(message.recipient)
        document = {
            "title": message.subject,
            "body": message.body,
            "data": message.data,
            "notification_id": message.notification_id,
            "delivery_id": message.delivery_id,
        }
        try:
            plaintext = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError):
            raise PermanentDeliveryError("webpush: data is not JSON-serialisable") from None
        if len(plaintext) > MAX_PAYLOAD:
            raise PermanentDeliveryError(
                f"webpush: payload of {len(plaintext)} bytes exceeds {MAX_PAYLOAD}"
            )
        headers = {
            "Authorization": self._authorization(_origin(subscription.endpoint)),
            "TTL": str(self.config.ttl_seconds),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": "high" if message.priority == "high" else "normal",
        }
        body = encrypt(plaintext, subscription)
        response = await self._http.post_bounded(subscription.endpoint, body, headers)
        if not response.is_success:
            raise classify(response)
        location = response.headers.get("Location")
        return SendResult(self.name, location[: http.MAX_MESSAGE_ID] if location else None)
