"""A real SMTP server (aiosmtpd) on a free loopback port that records what it receives.

It can also answer like a real relay having a bad day: refuse a recipient with 550, defer
with 451, or be slow. Those are real SMTP replies on a real connection, not mocks.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.services import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    arrived: float  # time.time()

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def notification_id(self) -> str:
        return str(self.message["X-Herald-Notification-Id"])

    @property
    def delivery_id(self) -> str:
        return str(self.message["X-Herald-Delivery-Id"])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.sink.lock:
            self.sink.hellos += 1
        if self.sink.pipelining:  # as Postfix and the big relays do (RFC 2920)
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.sink.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.sink.lock:
            self.sink.data_started += 1
            if self.sink.data_failures > 0:
                self.sink.data_failures -= 1
                return self.sink.data_failure_reply
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.sink.lock:
            self.sink.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, time.time())
            )
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_failures = 0
        self.data_failure_reply = "451 4.3.0 Try again later"
        self.delay = 0.0
        self.pipelining = True  # offered in EHLO's reply
        self.hellos = 0  # EHLO commands: one per connection (without STARTTLS)
        self.data_started = 0  # DATA commands begun, answered or not
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def fail_data(self, times: int, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer the next ``times`` DATA commands with ``reply``."""
        with self.lock:
            self.data_failures = times
            self.data_failure_reply = reply

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def duplicates(self) -> dict[str, int]:
        """Message-IDs that arrived more than once, with their counts."""
        counts = Counter(m.message_id for m in self.messages())
        return {mid: n for mid, n in counts.items() if n > 1}

    async def wait_for_data(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` messages are being sent (DATA begun), answered or not."""
        deadline = time.monotonic() + timeout
        while self.data_started < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"SMTP sink saw {self.data_started} of {count} DATA commands")
            await asyncio.sleep(0.02)

    async def wait_for_notifications(self, ids: Collection[str], timeout: float = 20.0) -> None:
        """Until a message of each of these notifications has arrived, or the timeout (the
        caller then finds what is missing). A duplicate does not count for another: after a
        kill -9 one may arrive twice while another is still on its way."""
        deadline = time.monotonic() + timeout
        while set(ids) - {m.notification_id for m in self.messages()}:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.02)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise TimeoutError(f"SMTP sink got {len(messages)} of {count} messages")
            await asyncio.sleep(0.02)
