"""Email through SendGrid's v3 Mail Send API (``POST /v3/mail/send``), a provider like ``smtp``
(usable in a failover chain).

The delivery id goes out as a custom argument (``herald_delivery_id``), which SendGrid puts in
every event it reports about the message: the receipts (channels/sendgrid_events) name their
delivery by it. Failures become typed errors: a refused request (400, 413) is permanent;
throttling, server trouble, lost connections and rejected credentials (our configuration, not
the message) are transient.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any, Literal

import httpx

from herald.channels import http
from herald.channels.base import OutboundMessage, SendResult
from herald.channels.email_message import check_headers, extra_headers
from herald.channels.http_email import HttpEmailConfig, HttpEmailProvider
from herald.errors import DeliveryError

DELIVERY_ARG = "herald_delivery_id"  # the custom argument every event carries back


class SendGridConfig(HttpEmailConfig):
    type: Literal["sendgrid"] = "sendgrid"
    base_url: str = "https://api.sendgrid.com"
    # The Signed Event Webhook's verification key (SendGrid shows it, base64), which the
    # receipts endpoint checks every event post against; unset: events are refused.
    webhook_verification_key: str | None = None


class SendGridProvider(HttpEmailProvider):
    kind = "sendgrid"

    def __init__(self, name: str, config: SendGridConfig, *, sender: str) -> None:
        super().__init__(name, config, sender=sender)
        self.config = config
        display, address = parseaddr(sender)
        self._from = {"email": address, **({"name": display} if display else {})}
        self._url = f"{config.base_url}/v3/mail/send"

    async def send(self, message: OutboundMessage) -> SendResult:
        request = mail_send_body(message, self._from)
        secret = self.config.api_key.get_secret_value()
        try:
            response = await self._http.get().post(
                self._url, json=request, headers={"Authorization": f"Bearer {secret}"}
            )
        except httpx.HTTPError as exc:
            raise http.classify_exception(exc, "sendgrid") from exc
        if response.status_code in (200, 202):
            message_id = response.headers.get("X-Message-Id")
            return SendResult(self.name, message_id[: http.MAX_MESSAGE_ID] if message_id else None)
        raise classify(response)


def mail_send_body(message: OutboundMessage, sender: dict[str, str]) -> dict[str, Any]:
    """The v3 Mail Send request for one message; PermanentDeliveryError for a header that
    could inject others (as over SMTP)."""
    headers = extra_headers(message.headers)
    check_headers([("To", message.recipient), ("Subject", message.subject), *headers.items()])
    content = [{"type": "text/plain", "value": message.body}]
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    return {
        "personalizations": [
            {
                "to": [{"email": message.recipient}],
                "custom_args": {
                    DELIVERY_ARG: message.delivery_id,
                    "herald_notification_id": message.notification_id,
                },
            }
        ],
        "from": sender,
        "subject": message.subject or "",
        "content": content,
        "headers": {
            **headers,
            "X-Herald-Notification-Id": message.notification_id,
            "X-Herald-Delivery-Id": message.delivery_id,
        },
    }


def _error_detail(response: httpx.Response) -> str:
    """SendGrid's ``errors[].message`` (and field), else a raw excerpt."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        detail = "; ".join(
            ": ".join(str(e[k]) for k in ("field", "message") if e.get(k))
            for e in errors
            if isinstance(e, dict)
        )
    else:
        detail = response.text
    return detail[: http.ERROR_EXCERPT].replace("\n", " ")


def classify(response: httpx.Response) -> DeliveryError:
    what = f"sendgrid: HTTP {response.status_code} {_error_detail(response)}"
    return http.classify_api(response, what, refused=_REFUSED, credentials="api_key")


_REFUSED = frozenset({400, 413})
