"""A fake Twilio Messaging API: basic auth, form fields, idempotency tokens, Twilio's errors.

It answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` the way Twilio does: 201 with a
Message resource, or a JSON error ``{"code", "message", "more_info", "status"}``. A message
sent with a ``StatusCallback`` gets status callbacks as Twilio sends them: form fields, signed
with ``X-Twilio-Signature`` (HMAC-SHA1 over the URL and the sorted fields, keyed with the
auth token, computed here from Twilio's documentation, not with Herald's code); ``fates``
says which statuses a number's messages go through, posted after ``callback_delay``
seconds when ``post_callbacks`` is on (or built by ``callback`` for a test to post).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.fakes.http_server import LocalHttpServer, Request, Response

_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def twilio_error(status: int, code: int, message: str, **headers: str) -> Response:
    return Response.of_json(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        **headers,
    )


@dataclass(frozen=True)
class SentSms:
    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    idempotency_token: str | None
    status_callback: str | None = None
    at: float = field(default_factory=time.time)  # when it was accepted


@dataclass(frozen=True)
class Callback:
    """A status callback as Twilio posts it."""

    url: str
    form: list[tuple[str, str]]
    headers: dict[str, str]

    @property
    def body(self) -> str:
        return urlencode(self.form)


def twilio_signature(auth_token: str, url: str, form: list[tuple[str, str]]) -> str:
    """Twilio's documented scheme: the URL, then each parameter name followed by its value,
    names in sorted order (a name's distinct values sorted); HMAC-SHA1, base64."""
    by_name: dict[str, set[str]] = {}
    for name, value in form:
        by_name.setdefault(name, set()).add(value)
    data = url + "".join(n + v for n in sorted(by_name) for v in sorted(by_name[n]))
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


class FakeTwilio(LocalHttpServer):
    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[SentSms] = []
        self.refused: set[str] = set()  # numbers answered with 21211
        self._by_token: dict[str, dict[str, Any]] = {}
        # Statuses (with an ErrorCode) a number's messages go through after "queued".
        self.fates: dict[str, list[tuple[str, str | None]]] = {}
        self.post_callbacks = False
        self.callback_delay = 0.2
        self.callbacks_posted: list[tuple[Callback, int]] = []  # with the answer's status

    def refuse(self, number: str) -> None:
        with self.lock:
            self.refused.add(number)

    def answer(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        if match is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        if request.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        if not self._authorised(request, match["sid"]):
            return twilio_error(401, 20003, "Authenticate", **{"WWW-Authenticate": "Basic"})
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return twilio_error(400, 20001, "Content-Type must be form-urlencoded")
        form = request.form()
        to, from_, service = form.get("To"), form.get("From"), form.get("MessagingServiceSid")
        body = form.get("Body", "")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds 1600.")
        if not _E164.fullmatch(to) or to in self.refused:
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")

        token = request.headers.get("i-twilio-idempotency-token")
        with self.lock:
            if token is not None and token in self._by_token:
                return Response.of_json(201, self._by_token[token])
            sid = "SM" + secrets.token_hex(16)
            resource = self._resource(sid, to, from_, service, body)
            sms = SentSms(sid, to, from_, service, body, token, form.get("StatusCallback"))
            self.messages.append(sms)
            if token is not None:
                self._by_token[token] = resource
        if self.post_callbacks and sms.status_callback:
            threading.Thread(target=self._post_fate, args=(sms,), daemon=True).start()
        return Response.of_json(201, resource)

    def callback(self, sms: SentSms, status: str, error_code: str | None = None) -> Callback:
        """The callback Twilio posts when ``sms`` reaches ``status``."""
        assert sms.status_callback is not None, "sent without a StatusCallback"
        form = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", "2010-04-01"),
            ("From", sms.from_ or "+15005550006"),
            ("MessageSid", sms.sid),
            ("MessageStatus", status),
            ("SmsSid", sms.sid),
            ("SmsStatus", status),
            ("To", sms.to),
        ]
        if error_code is not None:
            form.append(("ErrorCode", error_code))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "TwilioProxy/1.1",
            "X-Twilio-Signature": twilio_signature(self.auth_token, sms.status_callback, form),
        }
        return Callback(sms.status_callback, form, headers)

    def _post_fate(self, sms: SentSms) -> None:
        fate = self.fates.get(sms.to, [("sent", None), ("delivered", None)])
        with httpx.Client(timeout=5) as client:
            for status, code in fate:
                time.sleep(self.callback_delay)
                call = self.callback(sms, status, code)
                try:
                    answer = client.post(call.url, content=call.body, headers=call.headers)
                    outcome = answer.status_code
                except httpx.HTTPError:
                    outcome = 0
                with self.lock:
                    self.callbacks_posted.append((call, outcome))

    def _authorised(self, request: Request, path_sid: str) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        ok = secrets.compare_digest(password.encode(), self.auth_token.encode())
        return ok and user == self.account_sid == path_sid

    def _resource(
        self, sid: str, to: str, from_: str | None, service: str | None, body: str
    ) -> dict[str, Any]:
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(1 + (len(body) - 1) // 153 if len(body) > 160 else 1),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Through a messaging service Twilio picks the sender later: "accepted".
            "status": "accepted" if service and not from_ else "queued",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
        }
