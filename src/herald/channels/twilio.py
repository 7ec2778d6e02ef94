"""SMS through Twilio's Programmable Messaging REST API (``POST .../Messages.json``).

The delivery id goes out as Twilio's idempotency token, so a retried attempt that reached
Twilio the first time does not send a second text. Failures become typed errors: a refused
number (400/404) is permanent; throttling, server trouble, lost connections and rejected
credentials (our configuration, not the message) are transient.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from herald.channels import http
from herald.channels.base import OutboundMessage, SendResult
from herald.errors import DeliveryError, PermanentDeliveryError
from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings


log = get_logger(__name__)

API_VERSION = "2010-04-01"
# Where Twilio posts a message's status callbacks; the delivery is in the query (Twilio signs
# the whole URL, so it cannot be changed).
RECEIPTS_PATH = "/api/v1/receipts/twilio/{provider}"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
# E.164: a plus, a country code that does not start with 0, 8 to 15 digits in all.
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# A sender is an E.164 number, a short code, or an alphanumeric sender id (max 11 chars).
_SENDER = re.compile(r"\+[1-9][0-9]{7,14}|[0-9]{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")


class TwilioConfig(BaseModel):
    """One Twilio account and sender: ``from_number`` or ``messaging_service_sid``, not both."""

    # hide_input_in_errors: a validation error must not quote the auth token back.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["twilio"] = "twilio"
    base_url: str = "https://api.twilio.com"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr = Field(min_length=1)
    from_number: str | None = None
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    timeout_seconds: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=8, ge=1)
    # Ask Twilio to report each message's fate (delivered, undelivered, ...) to Herald at
    # HERALD_PUBLIC_URL (see RECEIPTS_PATH), which must reach Herald from the internet.
    status_callback: bool = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http.http_url(value).rstrip("/")

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not _SENDER.fullmatch(value):
            raise ValueError("must be an E.164 number, a short code or an alphanumeric sender id")
        return value

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioConfig:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from_number and messaging_service_sid")
        return self


class TwilioProvider:
    """Sends ``message.body`` (never the subject: SMS has none) to an E.164 number."""

    channel = "sms"

    @classmethod
    def from_config(
        cls, name: str, config: TwilioConfig, settings: Settings, deps: Dependencies
    ) -> TwilioProvider:
        return cls(name, config, public_url=settings.public_url)

    def __init__(self, name: str, config: TwilioConfig, *, public_url: str | None = None) -> None:
        self.name = name
        self.config = config
        self._callback = None
        if config.status_callback and public_url:
            path = RECEIPTS_PATH.format(provider=quote(name, safe=""))
            self._callback = public_url.rstrip("/") + path
        self.concurrency = config.concurrency
        self._url = (
            f"{config.base_url}/{API_VERSION}/Accounts/"
            f"{quote(config.account_sid, safe='')}/Messages.json"
        )
        self._http = http.ProviderClient(
            f"twilio provider {name!r}", config.timeout_seconds, max_connections=config.concurrency
        )

    def __repr__(self) -> str:
        return f"TwilioProvider(name={self.name!r}, account_sid={self.config.account_sid!r})"

    async def start(self) -> None:
        self._http.open()
        log.info(
            "twilio.configured",
            provider=self.name,
            base_url=self.config.base_url,
            account_sid=self.config.account_sid,
            sender=self.config.from_number or self.config.messaging_service_sid,
        )

    async def close(self) -> None:
        await self._http.close()

    async def send(self, message: OutboundMessage) -> SendResult:
        client = self._http.get()
        if not E164.fullmatch(message.recipient):
            raise PermanentDeliveryError("twilio: recipient is not an E.164 phone number")
        if not message.body.strip():
            raise PermanentDeliveryError("twilio: message body is empty")
        form = {"To": message.recipient, "Body": message.body}
        if self.config.messaging_service_sid is not None:
            form["MessagingServiceSid"] = self.config.messaging_service_sid
        else:
            assert self.config.from_number is not None
            form["From"] = self.config.from_number
        if self._callback is not None:
            form["StatusCallback"] = f"{self._callback}?delivery={quote(message.delivery_id)}"
        try:
            response = await client.post(
                self._url,
                data=form,
                auth=(self.config.account_sid, self.config.auth_token.get_secret_value()),
                headers={IDEMPOTENCY_HEADER: message.delivery_id, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise self._scrub(http.classify_exception(exc, "twilio")) from exc
        if response.status_code in (200, 201):
            return SendResult(self.name, _message_sid(response))
        raise self._scrub(classify(response))

    def _scrub(self, error: DeliveryError) -> DeliveryError:
        """Belt and braces: whatever a server or library echoed, the token never leaves."""
        secret = self.config.auth_token.get_secret_value()
        text = str(error)
        if secret not in text:
            return error
        return type(error)(text.replace(secret, "**********"), retry_after=error.retry_after)


def _message_sid(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        body = None
    sid = body.get("sid") if isinstance(body, dict) else None
    if not isinstance(sid, str):
        # Twilio said yes; retrying would only be deduplicated, so keep the success.
        log.warning("twilio.no_sid", status=response.status_code)
        return None
    return sid


def _error_detail(response: httpx.Response) -> str:
    """Twilio's ``code`` and ``message`` from its JSON error body, else a raw excerpt."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "message" in body):
        detail = f"code {body.get('code')}: {body.get('message')}"
        if body.get("more_info"):
            detail += f" ({body['more_info']})"
    else:
        detail = response.text
    return detail[: http.ERROR_EXCERPT].replace("\n", " ")


def classify(response: httpx.Response) -> DeliveryError:
    """A non-2xx answer from Twilio as a typed error."""
    what = f"twilio: HTTP {response.status_code} {_error_detail(response)}"
    return http.classify_api(
        response, what, refused=_REFUSED, credentials="account_sid and auth_token"
    )


_REFUSED = frozenset({400, 404})
