"""Push notifications through Firebase Cloud Messaging's HTTP v1 API.

Authentication is a Google service account: a JWT signed with its private key is exchanged at
the token endpoint for an OAuth2 access token, which is cached until shortly before it expires
and refreshed by one sender at a time. FCM has no idempotency key; the delivery id travels in
the message data so that apps can drop a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

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

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings


log = get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # the longest Google accepts
# Refresh this long before the token expires, so that a send never carries one that lapses
# on its way (and clocks that disagree a little do not matter).
REFRESH_MARGIN = 60.0
# Data keys FCM rejects (and prefixes it reserves); checked here to fail without a round trip.
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
RESERVED_DATA_PREFIXES = ("google", "gcm")

PERMANENT_CODES = frozenset({"UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"})
TRANSIENT_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "THIRD_PARTY_AUTH_ERROR"})


class FcmConfig(BaseModel):
    """One Firebase project; credentials inline (``service_account_json``) or from a file."""

    # hide_input_in_errors: a validation error must not quote the private key back.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["fcm"] = "fcm"
    project_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9:._-]*$")
    service_account_json: SecretStr | None = None
    service_account_file: Path | None = None
    endpoint: str = "https://fcm.googleapis.com"
    token_uri: str | None = None  # else the service account's own token_uri
    timeout_seconds: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        http.http_url(value)
        return value.rstrip("/")

    @field_validator("token_uri")
    @classmethod
    def _token_uri(cls, value: str | None) -> str | None:
        return None if value is None else http.http_url(value)

    @model_validator(mode="after")
    def _one_credential(self) -> FcmConfig:
        if (self.service_account_json is None) == (self.service_account_file is None):
            raise ValueError("set exactly one of service_account_json and service_account_file")
        if self.service_account_json is not None:
            # Found now rather than at the first send; the file is read when the provider
            # is built, since it may be mounted after the configuration is parsed.
            ServiceAccount.parse(self.service_account_json.get_secret_value(), self.token_uri)
        return self


@dataclass(frozen=True, slots=True, repr=False)
class ServiceAccount:
    client_email: str
    private_key: RSAPrivateKey
    private_key_id: str | None
    token_uri: str

    def __repr__(self) -> str:
        return f"ServiceAccount(client_email={self.client_email!r})"

    @classmethod
    def parse(cls, text: str, token_uri: str | None = None) -> ServiceAccount:
        """Raises ValueError with a message that never quotes the key."""
        try:
            info = json.loads(text)
        except ValueError:
            raise ValueError("service account is not valid JSON") from None
        if not isinstance(info, dict):
            raise ValueError("service account must be a JSON object")
        email, pem = info.get("client_email"), info.get("private_key")
        uri = token_uri or info.get("token_uri")
        missing = [
            name
            for name, value in (("client_email", email), ("private_key", pem), ("token_uri", uri))
            if not isinstance(value, str) or not value
        ]
        if missing:
            raise ValueError(f"service account lacks {', '.join(missing)}")
        assert isinstance(email, str)
        assert isinstance(pem, str)
        assert isinstance(uri, str)
        http.http_url(uri)
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            # from None: the original exception may carry parts of the key.
            raise ValueError("service account private_key is not an unencrypted PEM key") from None
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("service account private_key is not an RSA key")
        key_id = info.get("private_key_id")
        return cls(email, key, key_id if isinstance(key_id, str) else None, uri)

    def assertion(self, now: int) -> str:
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.private_key_id} if self.private_key_id else None
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)


def load_service_account(config: FcmConfig) -> ServiceAccount:
    if config.service_account_json is not None:
        text = config.service_account_json.get_secret_value()
        source = "service_account_json"
    else:
        assert config.service_account_file is not None
        source = f"service_account_file {config.service_account_file}"
        try:
            text = config.service_account_file.read_text()
        except OSError as exc:
            raise ConfigError(f"fcm: cannot read {source}: {exc.strerror}") from None
    try:
        return ServiceAccount.parse(text, config.token_uri)
    except ValueError as exc:
        raise ConfigError(f"fcm: {source}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _AccessToken:
    value: str
    refresh_at: float  # time.monotonic()


class FcmProvider:
    """Sends ``subject``/``body`` as the notification's title and body to one device token."""

    channel = "push"

    @classmethod
    def from_config(
        cls, name: str, config: FcmConfig, settings: Settings, deps: Dependencies
    ) -> FcmProvider:
        return cls(name, config)

    def __init__(self, name: str, config: FcmConfig) -> None:
        self.name = name
        self.config = config
        self.concurrency = config.concurrency
        self._account = load_service_account(config)
        self._send_url = (
            f"{config.endpoint}/v1/projects/{quote(config.project_id, safe='')}/messages:send"
        )
        self._http = http.ProviderClient(
            f"fcm provider {name!r}", config.timeout_seconds, max_connections=config.concurrency
        )
        self._token: _AccessToken | None = None
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"FcmProvider(name={self.name!r}, project_id={self.config.project_id!r})"

    async def start(self) -> None:
        self._http.open()
        log.info(
            "fcm.configured",
            provider=self.name,
            project_id=self.config.project_id,
            client_email=self._account.client_email,
        )

    async def close(self) -> None:
        self._token = None
        await self._http.close()

    async def send(self, message: OutboundMessage) -> SendResult:
        client = self._http.get()
        payload = build_payload(message)
        token = await self._access_token(client)
        response = await self._post(client, token, payload)
        if response.status_code == 401 and _error_code(response) != "THIRD_PARTY_AUTH_ERROR":
            # Revoked, or expired early by a clock that runs ahead: one fresh token, one retry.
            log.info("fcm.token_rejected", provider=self.name, delivery_id=message.delivery_id)
            self._forget(token)
            token = await self._access_token(client)
            response = await self._post(client, token, payload)
        if response.is_success:
            return SendResult(self.name, _message_name(response))
        raise classify(response)

    async def _post(self, client: httpx.AsyncClient, token: str, payload: Any) -> httpx.Response:
        try:
            return await client.post(
                self._send_url, json=payload, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise http.classify_exception(exc, "fcm") from exc

    def _forget(self, value: str) -> None:
        # Only the token that failed: a concurrent send may already have replaced it.
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _access_token(self, client: httpx.AsyncClient) -> str:
        token = self._token
        if token is not None and time.monotonic() < token.refresh_at:
            return token.value
        async with self._token_lock:
            # Whoever held the lock before us may have fetched one already.
            token = self._token
            if token is not None and time.monotonic() < token.refresh_at:
                return token.value
            token = await self._fetch_token(client)
            self._token = token
            return token.value

    async def _fetch_token(self, client: httpx.AsyncClient) -> _AccessToken:
        asked = time.monotonic()
        assertion = self._account.assertion(int(time.time()))
        try:
            response = await client.post(
                self._account.token_uri,
                data={"grant_type": GRANT_TYPE, "assertion": assertion},
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            error = http.classify_exception(exc, "fcm token endpoint")
            # Even a malformed token URI is our configuration, not this message's fault.
            raise TransientDeliveryError(str(error)) from exc
        if not response.is_success:
            excerpt = _token_error(response)
            raise TransientDeliveryError(
                f"fcm token endpoint: HTTP {response.status_code} {excerpt}"
                " (check the service account)",
                retry_after=http.retry_after(response),
            )
        try:
            body = response.json()
            value = body["access_token"]
            expires_in = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TransientDeliveryError("fcm token endpoint: malformed token response") from None
        if not isinstance(value, str) or not value:
            raise TransientDeliveryError("fcm token endpoint: malformed token response")
        log.debug("fcm.token_refreshed", provider=self.name, expires_in=expires_in)
        return _AccessToken(value, asked + expires_in - REFRESH_MARGIN)


def build_payload(message: OutboundMessage) -> dict[str, Any]:
    """The v1 ``messages:send`` body; raises PermanentDeliveryError for what FCM would refuse."""
    if not message.recipient.strip():
        raise PermanentDeliveryError("fcm: empty registration token")
    data: dict[str, str] = {}
    for key, value in message.data.items():
        if key in RESERVED_DATA_KEYS or key.lower().startswith(RESERVED_DATA_PREFIXES):
            raise PermanentDeliveryError(f"fcm: data key {key!r} is reserved by FCM")
        if isinstance(value, str):
            data[key] = value
            continue
        # FCM data values are strings only; anything else travels as JSON for the app to read.
        try:
            data[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise PermanentDeliveryError(f"fcm: data {key!r} is not JSON: {exc}") from None
    data["herald_notification_id"] = message.notification_id
    data["herald_delivery_id"] = message.delivery_id
    notification = {"body": message.body}
    if message.subject:
        notification = {"title": message.subject, **notification}
    high = message.priority == "high"
    return {
        "message": {
            "token": message.recipient,
            "notification": notification,
            "data": data,
            "android": {"priority": "HIGH" if high else "NORMAL"},
            "apns": {"headers": {"apns-priority": "10" if high else "5"}},
        }
    }


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message_name(response: httpx.Response) -> str | None:
    body = _json(response)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        # Accepted all the same; a retry would send the push twice.
        log.warning("fcm.no_message_name", status=response.status_code)
        return None
    return name


def _error(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _names_the_token(error: dict[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token (a BadRequest detail's
    field violation on ``message.token``), not about the message."""
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        violations = detail.get("fieldViolations") if isinstance(detail, dict) else None
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


def _error_code(response: httpx.Response) -> str | None:
    """The FcmError ``errorCode`` from the details, e.g. UNREGISTERED."""
    details = _error(response).get("details")
    for detail in details if isinstance(details, list) else []:
        if (
            isinstance(detail, dict)
            and str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError")
            and isinstance(detail.get("errorCode"), str)
        ):
            code: str = detail["errorCode"]
            return code
    return None


def _token_error(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict) and "error" in body:
        text = f"{body.get('error')}: {body.get('error_description', '')}"
    else:
        text = response.text
    return text[: http.ERROR_EXCERPT].replace("\n", " ")


def classify(response: httpx.Response) -> DeliveryError:
    """A non-2xx answer from FCM as a typed error that names FCM's error code."""
    status = response.status_code
    error = _error(response)
    code = _error_code(response) or error.get("status")
    if not error:
        if status in (401, 403):
            return TransientDeliveryError(
                f"fcm: HTTP {status} (credentials rejected: check the service account)",
                retry_after=http.retry_after(response),
            )
        return http.classify_status(response, "fcm")
    text = f"fcm: {code} (HTTP {status}): {error.get('message', '')}"[: http.ERROR_EXCERPT]
    if code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and _names_the_token(error)):
        return AddressGoneError(text)  # the app was uninstalled, or the token is not one
    if code in PERMANENT_CODES or status in (400, 404):
        return PermanentDeliveryError(text)
    if status in (401, 403):
        # Our service account lacks the role or the project is wrong: fixable, not the message.
        return TransientDeliveryError(
            f"{text} (credentials rejected: check the service account and project_id)",
            retry_after=http.retry_after(response),
        )
    if code in TRANSIENT_CODES or status in http.TRANSIENT_STATUSES or status >= 500:
        return TransientDeliveryError(text, retry_after=http.retry_after(response))
    return http.classify_status(response, "fcm")
