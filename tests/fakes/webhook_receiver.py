"""A webhook receiver that checks signatures the documented way, as a customer's would."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from herald.channels.webhook import SIGNATURE_HEADER, verify_signature
from tests.fakes.http_server import LocalHttpServer, Request, Response


class WebhookReceiver(LocalHttpServer):
    """Accepts (200) a request whose signature verifies with one of ``secrets``, else 401.

    ``verified`` holds the first request of each ``Herald-Webhook-Id``, ``duplicates`` the
    repeats (answered 200 too, as a receiver that dedupes would), ``unverified`` the rest.
    Set ``redirect_to`` to answer 302 instead, ``delay`` to answer slowly.
    """

    def __init__(self, secrets: Sequence[str] = (), *, tolerance_seconds: float = 300) -> None:
        super().__init__()
        self.secrets = list(secrets)
        self.tolerance_seconds = tolerance_seconds
        self.redirect_to: str | None = None
        self.delay = 0.0
        self.verified: list[Request] = []
        self.duplicates: list[Request] = []
        self.unverified: list[Request] = []
        self._seen: set[str] = set()

    def start(self) -> None:
        super().start()
        assert self._server is not None
        report = self._server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            # A sender that timed out has hung up before a slow answer: expected, not news.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                report(request, client_address)

        self._server.handle_error = handle_error  # type: ignore[method-assign]

    def verifies(self, request: Request) -> bool:
        header = request.headers.get(SIGNATURE_HEADER.lower(), "")
        return any(
            verify_signature(request.body, header, secret, tolerance_seconds=self.tolerance_seconds)
            for secret in self.secrets
        )

    def answer(self, request: Request) -> Response:
        if self.delay:
            time.sleep(self.delay)
        if self.redirect_to is not None:
            return Response(302, headers={"Location": self.redirect_to})
        verified = self.verifies(request)
        with self.lock:
            if not verified:
                self.unverified.append(request)
                return Response(401, b"signature mismatch")
            webhook_id = request.headers.get("herald-webhook-id", "")
            if webhook_id in self._seen:
                self.duplicates.append(request)
            else:
                self._seen.add(webhook_id)
                self.verified.append(request)
            return Response(200, b'{"ok":true}', {"X-Request-Id": f"rcv-{len(self.requests)}"})
