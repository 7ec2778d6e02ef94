"""Webhooks: a JSON POST to the recipient URL, signed with HMAC-SHA256 (Stripe/Svix style).

Every request carries ``Herald-Webhook-Id`` (the delivery id, stable across attempts: receivers
dedupe on it), ``Herald-Webhook-Timestamp`` and ``Herald-Signature: t=<ts>,v1=<hex>[,v1=...]``,
where each ``v1`` is ``HMAC-SHA256(secret, f"{t}." + body)``, one per currently valid secret,
so a receiver still on the old secret verifies during a rotation. Receivers check it with
:func:`verify_signature` (or its equivalent in their language) and reject timestamps older
than the tolerance (300 s by default) to stop replays.

The secrets are the recipient user's, else the tenant's (see herald.store.tenant_secrets):
never shared between tenants, and the body names its ``tenant``.

The receiver's answer is classified by status code alone; its body is never read into an error,
because errors are shown to API callers and the URL may point anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from herald.channels import http
from herald.channels.base import OutboundMessage, SendResult
from herald.errors import (
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

ID_HEADER = "Herald-Webhook-Id"
TIMESTAMP_HEADER = "Herald-Webhook-Timestamp"
SIGNATURE_HEADER = "Herald-Signature"

#: The currently valid signing secrets for a message, newest first.
SigningSecrets = Callable[[OutboundMessage], Awaitable[Sequence[str]]]

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"] = "webhook"
    timeout_seconds: float = Field(10.0, gt=0)
    concurrency: int = Field(16, ge=1)
    #: How old a signature receivers should accept; published to them, not enforced here.
    tolerance_seconds: float = Field(300, gt=0)


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secrets: Sequence[str], timestamp: int) -> str:
    """The ``Herald-Signature`` value: ``t=<timestamp>`` and one ``v1=`` per secret."""
    ts = str(timestamp)
    return ",".join([f"t={ts}", *(f"v1={_digest(secret, ts, body)}" for secret in secrets)])


def verify_signature(
    body: bytes,
    signature_header: str,
    secret: str,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """The receiver's check: True if one ``v1`` matches ``secret`` and ``t`` is fresh.

    ``body`` must be the raw request body, before any JSON parsing. Unknown schemes
    (``v2=`` ...) are ignored so that senders can add them without breaking receivers.
    """
    timestamp: str | None = None
    candidates: list[str] = []
    for part in signature_header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            return False
        if key == "t":
            if timestamp is not None:
                return False
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or not _TIMESTAMP.fullmatch(timestamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body).encode()
    # Every candidate is compared, so the time taken says nothing about which one matched.
    matches = [hmac.compare_digest(expected, c.encode()) for c in candidates]
    return any(matches)


def payload(message: OutboundMessage) -> bytes:
    """The request body: compact and with sorted keys, so the same message signs the same."""
    document: dict[str, Any] = {
        "id": message.delivery_id,
        "type": "notification",
        # Signed with the rest: a receiver checks it is the tenant it expects, so a signature
        # made for one tenant never vouches for a message of another.
        "tenant": message.tenant_id,
        "notification_id": message.notification_id,
        "user_id": message.user_id,
        "channel": message.channel,
        "category": message.category,
        "priority": message.priority,
        "subject": message.subject,
        "body": message.body,
        "data": message.data,
        "attempt": message.attempt,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def target(recipient: str) -> httpx.URL:
    # Errors name the scheme at most: the rest of a webhook URL may carry a token.
    try:
        url = httpx.URL(recipient.strip())
        host = url.host  # a host name IDNA refuses ("xn--") raises only here
    except (httpx.InvalidURL, ValueError):
        raise PermanentDeliveryError("webhook: the recipient is not a valid URL") from None
    if not url.scheme or not host:
        raise PermanentDeliveryError("webhook: the recipient is not an absolute http(s) URL")
    if url.scheme not in ("http", "https"):
        raise PermanentDeliveryError(f"webhook: {url.scheme}: URLs are not supported, only http(s)")
    return url


def classify(response: httpx.Response) -> DeliveryError:
    """A non-2xx answer by status code only: the body is the receiver's, not ours to echo."""
    status = response.status_code
    if 300 <= status < 400:
        return PermanentDeliveryError(f"webhook: HTTP {status}: redirect not followed")
    if status == 410:
        return PermanentDeliveryError("webhook: HTTP 410: the endpoint is gone")
    if status in http.TRANSIENT_STATUSES or status >= 500:
        return TransientDeliveryError(
            f"webhook: HTTP {status}", retry_after=http.retry_after(response)
        )
    return PermanentDeliveryError(f"webhook: HTTP {status}")


class WebhookProvider:
    """POSTs signed JSON to the URL in ``message.recipient``."""

    channel = "webhook"

    @classmethod
    def from_config(
        cls, name: str, config: WebhookConfig, settings: Settings, deps: Dependencies
    ) -> WebhookProvider:
        if deps.signing_secrets is None:
            raise ConfigError("the webhook provider needs a source of signing secrets")
        return cls(name, config, deps.signing_secrets, outbound=settings.outbound_policy())

    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        secrets: SigningSecrets,
        *,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.concurrency = config.concurrency
        self._secrets = secrets
        # Recipients are user-supplied URLs: only public addresses, unless allowed (SSRF).
        self._http = http.ProviderClient(
            "webhook",
            config.timeout_seconds,
            max_connections=config.concurrency,
            outbound=outbound or OutboundPolicy(),
        )

    def __repr__(self) -> str:
        return f"WebhookProvider(name={self.name!r})"

    async def start(self) -> None:
        self._http.open()
        log.info("webhook.configured", provider=self.name, concurrency=self.concurrency)

    async def close(self) -> None:
        await self._http.close()

    async def send(self, message: OutboundMessage) -> SendResult:
        self._http.get()  # not started: transient, before anything else is looked at
        url = target(message.recipient)
        try:
            body = payload(message)
        except (TypeError, ValueError) as exc:
            raise PermanentDeliveryError("webhook: data is not JSON-serialisable") from exc
        secrets = await valid_secrets(self._secrets(message))
        return await self.post_signed(url, body, message.delivery_id, secrets)

    async def post_signed(
        self,
        url: httpx.URL,
        body: bytes,
        webhook_id: str,
        secrets: Sequence[str],
        headers: dict[str, str] | None = None,
    ) -> SendResult:
        """POST ``body`` to ``url`` signed with ``secrets`` (status webhooks post this way
        too); a non-2xx answer raises, typed by its status code."""
        timestamp = int(time.time())
        sent = {
            **(headers or {}),
            "Content-Type": "application/json",
            ID_HEADER: webhook_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(body, secrets, timestamp),
        }
        response = await self._http.post_bounded(url, body, sent)
        if not response.is_success:
            raise classify(response)
        request_id = response.headers.get("X-Request-Id")
        return SendResult(self.name, request_id[: http.MAX_MESSAGE_ID] if request_id else None)


async def valid_secrets(lookup: Awaitable[Sequence[str]]) -> list[str]:
    """The signing secrets ``lookup`` finds, refusing none (an empty key would make a
    signature anyone can compute); where they live being down is a transient failure."""
    try:
        secrets = await lookup
    except DeliveryError:
        raise
    except Exception as exc:
        # Where the secrets live (a database, a vault) is down, not the receiver.
        raise TransientDeliveryError(
            f"webhook: signing secrets unavailable ({type(exc).__name__})"
        ) from exc
    usable = [s for s in secrets if s]
    if not usable:
        raise PermanentDeliveryError("webhook: no signing secret")
    return usable
