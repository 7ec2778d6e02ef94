"""A fake SendGrid: the v3 Mail Send API and its Signed Event Webhook.

``POST /v3/mail/send`` is answered as SendGrid does: 202 with ``X-Message-Id``, or 400/401
with ``{"errors": [{"message", "field", "help"}]}``. ``events`` builds the event post SendGrid
would make about a sent message: a JSON array, each event with the message's custom arguments,
signed with ECDSA (P-256, SHA-256) over the timestamp followed by the body, base64 in
``X-Twilio-Email-Event-Webhook-Signature`` (computed here from SendGrid's documentation);
``verification_key`` is the public key SendGrid would show.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.fakes.http_server import LocalHttpServer, Request, Response


def sendgrid_error(status: int, message: str, field_name: str | None = None) -> Response:
    return Response.of_json(
        status, {"errors": [{"message": message, "field": field_name, "help": None}]}
    )


@dataclass(frozen=True)
class SentMail:
    message_id: str
    to: str
    sender: str
    subject: str
    content: list[dict[str, str]]
    custom_args: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class EventPost:
    body: bytes
    headers: dict[str, str]


class FakeSendGrid(LocalHttpServer):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.mails: list[SentMail] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        spki = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.verification_key = base64.b64encode(spki).decode()

    def answer(self, request: Request) -> Response:
        if request.path != "/v3/mail/send" or request.method != "POST":
            return sendgrid_error(404, "not found")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return sendgrid_error(401, "The provided authorization grant is invalid")
        try:
            body: Any = request.json()
        except ValueError:
            return sendgrid_error(400, "Bad Request")
        try:
            [personalization] = body["personalizations"]
            [to] = personalization["to"]
            sender, subject, content = body["from"]["email"], body["subject"], body["content"]
        except (KeyError, TypeError, ValueError):
            return sendgrid_error(400, "The personalizations field is required", "personalizations")
        if "@" not in to.get("email", ""):
            return sendgrid_error(400, "Does not contain a valid address.", "personalizations.0.to")
        if not content or content[0].get("type") != "text/plain":
            return sendgrid_error(400, "text/plain must come first", "content")
        message_id = secrets.token_urlsafe(16)[:22]
        mail = SentMail(
            message_id,
            to["email"],
            sender,
            subject,
            content,
            personalization.get("custom_args", {}),
            body.get("headers", {}),
        )
        with self.lock:
            self.mails.append(mail)
        return Response(202, b"", {"X-Message-Id": message_id})

    def events(self, mail: SentMail, *names: str, **fields: Any) -> EventPost:
        """The signed post of events ``names`` about ``mail``, each with ``fields``."""
        now = int(time.time())
        events = [
            {
                "email": mail.to,
                "timestamp": now,
                "event": name,
                "sg_event_id": secrets.token_urlsafe(16),
                "sg_message_id": f"{mail.message_id}.filterdrecv-1",
                "smtp-id": f"<{mail.message_id}@ismtpd0001>",
                **mail.custom_args,
                **fields,
            }
            for name in names
        ]
        return self.sign(json.dumps(events).encode(), str(now))

    def sign(self, body: bytes, timestamp: str) -> EventPost:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        return EventPost(body, headers)
