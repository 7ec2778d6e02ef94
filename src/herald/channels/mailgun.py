"""Email through Mailgun's Messages API (``POST /v3/<domain>/messages``), a provider like
``smtp`` (usable in a failover chain).

The delivery id goes out as a user variable (``v:herald_delivery_id``), which Mailgun puts in
every event it reports about the message: the receipts (channels/mailgun_events) name their
delivery by it. A refused request (400) is permanent; throttling, server trouble, lost
connections and rejected credentials are transient.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from herald.channels import http
from herald.channels.base import OutboundMessage, SendResult
from herald.channels.email_message import check_headers, extra_headers
from herald.channels.http_email import HttpEmailConfig, HttpEmailProvider
from herald.errors import DeliveryError

DELIVERY_VARIABLE = "herald_delivery_id"  # the user variable every event carries back
_REFUSED = frozenset({400, 404})


class MailgunConfig(HttpEmailConfig):
    type: Literal["mailgun"] = "mailgun"
    base_url: str = "https://api.mailgun.net"  # the EU region: https://api.eu.mailgun.net
    domain: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")
    # The HTTP webhook signing key (Mailgun's dashboard), which the receipts endpoint checks
    # every event against; unset: events are refused.
    webhook_signing_key: SecretStr | None = None


class MailgunProvider(HttpEmailProvider):
    kind = "mailgun"

    def __init__(self, name: str, config: MailgunConfig, *, sender: str) -> None:
        super().__init__(name, config, sender=sender)
        self.config = config
        self._url = f"{config.base_url}/v3/{quote(config.domain, safe='')}/messages"

    async def send(self, message: OutboundMessage) -> SendResult:
        form = messages_form(message, self.sender)
        auth = ("api", self.config.api_key.get_secret_value())
        try:
            response = await self._http.get().post(self._url, data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise http.classify_exception(exc, "mailgun") from exc
        if response.status_code == 200:
            return SendResult(self.name, _message_id(response))
        raise classify(response)


def messages_form(message: OutboundMessage, sender: str) -> dict[str, str]:
    """The Messages API's form for one message; PermanentDeliveryError for a header that
    could inject others (as over SMTP)."""
    headers = extra_headers(message.headers)
    check_headers([("To", message.recipient), ("Subject", message.subject), *headers.items()])
    form = {
        "from": sender,
        "to": message.recipient,
        "subject": message.subject or "",
        "text": message.body,
        f"v:{DELIVERY_VARIABLE}": message.delivery_id,
        "h:X-Herald-Notification-Id": message.notification_id,
        "h:X-Herald-Delivery-Id": message.delivery_id,
        **{f"h:{name}": value for name, value in headers.items()},
    }
    if message.html:
        form["html"] = message.html
    return form


def _message_id(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return found[: http.MAX_MESSAGE_ID] if isinstance(found, str) else None


def classify(response: httpx.Response) -> DeliveryError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    detail = body.get("message") if isinstance(body, dict) else None
    text = str(detail or response.text)[: http.ERROR_EXCERPT].replace("\n", " ")
    what = f"mailgun: HTTP {response.status_code} {text}"
    return http.classify_api(response, what, refused=_REFUSED, credentials="api_key and domain")
