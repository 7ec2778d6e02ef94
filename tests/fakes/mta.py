"""A mail server (aiosmtpd, on loopback) that relays what Herald sends on to "the internet" and
bounces as a real MTA does: it accepts the message (250), then, for a recipient whose own
server refuses it (``refuse``), sends a delivery status notification (RFC 3464) to the
envelope sender, over SMTP, to the server ``bounce_to`` names: Herald's inbound listener."""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.services import free_port


def bounce_report(
    delivery_id: str,
    *,
    to: str = "bounce@herald.invalid",
    recipient: str = "ann@example.org",
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown",
    report_id: str | None = None,
) -> bytes:
    """A DSN as Postfix writes one, about the message Herald sent for ``delivery_id`` (its
    headers returned, with the Message-ID Herald gave it)."""
    report_id = report_id or f"<{uuid.uuid4().hex}@mx.example.net>"
    boundary = uuid.uuid4().hex
    lines = [
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)",
        f"To: {to}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {report_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "I'm sorry to have to inform you that your message could not be delivered.",
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.net",
        f"Arrival-Date: {formatdate(usegmt=True)}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822;{recipient}",
        f"Action: {action}",
        f"Status: {status}",
        "Remote-MTA: dns; mail.example.org",
        f"Diagnostic-Code: smtp; {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        "From: Herald <herald@example.com>",
        f"To: {recipient}",
        f"Message-ID: <{delivery_id}@example.com>",
        "Subject: Your code",
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()


@dataclass
class Relayed:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.time)


class FakeMta:
    def __init__(self) -> None:
        self.port = free_port()
        self.relayed: list[Relayed] = []
        # Recipients whose server refuses: (action, status, the server's reply).
        self.refuse: dict[str, tuple[str, str, str]] = {}
        self.bounce_to: tuple[str, int] | None = None
        self.bounces_sent: list[tuple[str, str]] = []  # (to, the inbound server's reply)
        self.lock = threading.Lock()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=off"

    def start(self) -> FakeMta:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        mail = Relayed(envelope.mail_from or "", list(envelope.rcpt_tos), data)
        with self.lock:
            self.relayed.append(mail)
        refused = [(r, self.refuse[r]) for r in mail.rcpt_tos if r in self.refuse]
        if refused and mail.mail_from:
            threading.Thread(target=self._bounce, args=(mail, refused), daemon=True).start()
        return "250 2.0.0 Ok: queued"

    def _bounce(self, mail: Relayed, refused: list[tuple[str, tuple[str, str, str]]]) -> None:
        """What the MTA does after trying the recipient's server: report back by mail."""
        assert self.bounce_to is not None, "no inbound server to bounce to"
        delivery_id = _header(mail.data, "X-Herald-Delivery-Id")
        for recipient, (action, status, reply) in refused:
            report = bounce_report(
                delivery_id,
                to=mail.mail_from,
                recipient=recipient,
                action=action,
                status=status,
                diagnostic=reply,
            )
            try:
                with smtplib.SMTP(*self.bounce_to, timeout=10) as client:
                    client.sendmail("", [mail.mail_from], report)
                    answer = "250"
            except smtplib.SMTPResponseException as exc:
                answer = str(exc.smtp_code)
            except smtplib.SMTPRecipientsRefused as exc:
                answer = str(next(iter(exc.recipients.values()))[0])
            with self.lock:
                self.bounces_sent.append((mail.mail_from, answer))


def _header(data: bytes, name: str) -> str:
    for line in data.split(b"\r\n"):
        if not line:
            break
        key, _, value = line.decode("utf-8", "replace").partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return ""
