"""A fake Mailgun: the Messages API and its signed webhooks.

``POST /v3/<domain>/messages`` (basic auth ``api:<key>``, form fields) is answered as Mailgun
does: 200 ``{"id": "<…>", "message": "Queued. Thank you."}``, 400 ``{"message": …}``, 401
``Forbidden``. ``event`` builds the webhook post Mailgun would make about a sent message: JSON
with ``signature`` (timestamp, token, and the hex HMAC-SHA256 of timestamp + token under the
webhook signing key, computed here from Mailgun's documentation) and ``event-data`` carrying the
message's user variables.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_server import LocalHttpServer, Request, Response

_PATH = re.compile(r"^/v3/(?P<domain>[^/]+)/messages$")


@dataclass(frozen=True)
class SentMail:
    message_id: str
    form: dict[str, str]
    at: float = field(default_factory=time.time)

    @property
    def variables(self) -> dict[str, str]:
        return {k[2:]: v for k, v in self.form.items() if k.startswith("v:")}


class FakeMailgun(LocalHttpServer):
    def __init__(self, domain: str, api_key: str, signing_key: str) -> None:
        super().__init__()
        self.domain, self.api_key, self.signing_key = domain, api_key, signing_key
        self.mails: list[SentMail] = []

    def answer(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        if match is None or request.method != "POST" or match["domain"] != self.domain:
            return Response(404, b"Not Found")
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Response(401, b"Forbidden")
        form = request.form()
        if "@" not in form.get("to", ""):
            message = "'to' parameter is not a valid address. please check documentation"
            return Response.of_json(400, {"message": message})
        if not form.get("from") or not (form.get("text") or form.get("html")):
            return Response.of_json(400, {"message": "Need at least one of 'text' or 'html'"})
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{self.domain}>"
        with self.lock:
            self.mails.append(SentMail(message_id, form))
        return Response.of_json(200, {"id": message_id, "message": "Queued. Thank you."})

    def event(
        self,
        mail: SentMail,
        name: str,
        *,
        key: str | None = None,
        at: float | None = None,
        token: str | None = None,
        **fields: Any,
    ) -> bytes:
        """The webhook post about ``mail``'s event ``name``, signed at ``at`` (default now)
        with ``key`` (default the real signing key)."""
        timestamp = str(int(time.time() if at is None else at))
        token = token or secrets.token_hex(25)
        signature = hmac.new(
            (key or self.signing_key).encode(), f"{timestamp}{token}".encode(), hashlib.sha256
        ).hexdigest()
        data = {
            "id": secrets.token_urlsafe(16),
            "timestamp": time.time(),
            "event": name,
            "recipient": mail.form["to"],
            "message": {"headers": {"message-id": mail.message_id.strip("<>")}},
            "user-variables": mail.variables,
            **fields,
        }
        post = {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": data,
        }
        return json.dumps(post).encode()
