"""Email over SMTP: a small pool of reused connections per worker, each sending one message
after another, pipelined where the relay allows (``smtp_client``).

Failures become typed errors: 4xx replies, timeouts and lost connections are transient;
5xx replies to the message or recipient are permanent.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import replace
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from herald.channels.base import OutboundMessage, SendResult
from herald.channels.email_message import Email, build_email
from herald.channels.smtp_client import (
    SmtpConnection,
    SmtpConnectionLost,
    SmtpReplyError,
    SmtpTarget,
    SmtpUnsupported,
)
from herald.domain import verp
from herald.domain.headers import is_single_line
from herald.errors import ConfigError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings

log = get_logger(__name__)

_STARTTLS = {"auto": None, "require": True, "off": False}


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:pass@]host[:port][?starttls=auto|require|off][&verify=false]
    [&ca_file=/path/ca.pem]``, or smtps://. ``ca_file``: a relay whose certificate a private
    CA signed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"HERALD_SMTP_URL: {exc}") from exc
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError("HERALD_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ConfigError("HERALD_SMTP_URL has no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "verify", "ca_file"}
    if unknown:
        raise ConfigError(f"HERALD_SMTP_URL: unknown option(s) {sorted(unknown)}")
    starttls = query.get("starttls", "auto")
    if starttls not in _STARTTLS:
        raise ConfigError("HERALD_SMTP_URL: starttls must be auto, require or off")
    implicit_tls = parts.scheme == "smtps"
    ca_file = query.get("ca_file")
    if ca_file is not None and not os.access(ca_file, os.R_OK):
        raise ConfigError(f"HERALD_SMTP_URL: ca_file {ca_file!r} is not a readable file")
    return SmtpTarget(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=implicit_tls,
        start_tls=False if implicit_tls else _STARTTLS[starttls],
        validate_certs=query.get("verify", "true").lower() not in ("false", "0", "no"),
        ca_file=ca_file,
    )


def classify(exc: Exception) -> DeliveryError:
    """Map an SMTP or socket failure to a transient or permanent delivery error."""
    if isinstance(exc, SmtpReplyError):
        detail = f"{exc.code} {exc.text}"
        if exc.command == "RCPT":
            if exc.code >= 500:
                return PermanentDeliveryError(f"recipient refused: {detail}")
            # The relay is up; the recipient's domain (or its policy) defers this one.
            return TransientDeliveryError(f"recipient deferred: {detail}", destination=True)
        if exc.command in ("MAIL", "DATA"):
            kind = PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError
            return kind(f"SMTP {detail}")
        # Greeting, EHLO, STARTTLS, AUTH: our configuration or the relay is wrong, not the
        # message: worth retrying later.
        return TransientDeliveryError(f"SMTP {exc.command}: {detail}")
    if isinstance(exc, SmtpUnsupported):
        kind = PermanentDeliveryError if exc.permanent else TransientDeliveryError
        return kind(str(exc))
    return TransientDeliveryError(f"{type(exc).__name__}: {exc}")


def tls_context(target: SmtpTarget) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_file)
    if not target.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpConfig(BaseModel):
    """A further SMTP relay in HERALD_PROVIDERS (e.g. for failover); unset fields fall back
    to the HERALD_SMTP_* and HERALD_EMAIL_FROM settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["smtp"]
    url: SecretStr
    sender: str | None = None
    pool_size: int | None = Field(default=None, ge=1, le=64)
    timeout_seconds: float | None = Field(default=None, gt=0)


class SmtpProvider:
    channel = "email"

    @classmethod
    def from_config(
        cls, name: str, config: SmtpConfig, settings: Settings, deps: Dependencies
    ) -> SmtpProvider:
        return cls(
            parse_smtp_url(config.url.get_secret_value()),
            sender=config.sender or settings.email_from,
            timeout=config.timeout_seconds or settings.smtp_timeout_seconds,
            pool_size=config.pool_size or settings.smtp_pool_size,
            name=name,
            bounce_domain=settings.bounce_domain,
        )

    def __init__(
        self,
        target: SmtpTarget,
        *,
        sender: str,
        timeout: float = 20.0,
        pool_size: int = 4,
        name: str = "smtp",
        bounce_domain: str | None = None,
    ) -> None:
        if not is_single_line(sender):
            raise ConfigError(f"{name}: the email sender must be a single line")
        self.name = name
        self.target = target
        self.sender = sender
        self.bounce_domain = bounce_domain
        self.timeout = timeout
        self.concurrency = pool_size
        self.tls = tls_context(target)  # built once: loading the CAs is not cheap
        # Connections, LIFO so the warm ones are reused; None: a slot not connected yet.
        self._idle: asyncio.LifoQueue[SmtpConnection | None] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._idle.put_nowait(None)

    async def start(self) -> None:
        log.info("smtp.configured", server=str(self.target), pool_size=self._idle.qsize())

    async def close(self) -> None:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            if conn is not None and not conn.closed:
                await conn.quit(self.timeout)

    async def reachable(self) -> bool:
        """Whether the relay greets a new connection: a cheap look while its circuit is open."""
        try:
            conn = await SmtpConnection.open(self.target, self.tls, self.timeout)
        except (SmtpReplyError, SmtpConnectionLost, SmtpUnsupported, OSError, TimeoutError):
            return False
        await conn.quit(self.timeout)
        return True

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            mail = build_email(message, self.sender)  # refuses header injection, permanently
        except ValueError as exc:
            raise PermanentDeliveryError(f"cannot build email: {exc}") from exc
        if self.bounce_domain is not None:
            mail = replace(mail, sender=verp.return_path(message.delivery_id, self.bounce_domain))
        conn = await self._idle.get()
        try:
            if conn is not None and not conn.closed:
                try:
                    await self._send(conn, mail)
                    return SendResult(self.name, mail.message_id)
                except SmtpConnectionLost as exc:
                    if not exc.before_reply:
                        raise
                    # The relay dropped a connection that sat idle in the pool before this
                    # message's first reply: it took nothing, so reconnect once instead of
                    # burning an attempt.
            conn = None  # should connecting fail, the slot stays empty
            conn = await SmtpConnection.open(self.target, self.tls, self.timeout)
            await self._send(conn, mail)
        except SmtpReplyError as exc:
            raise classify(exc) from exc  # the connection stays usable (closed if it is not)
        except (SmtpConnectionLost, SmtpUnsupported, OSError, TimeoutError) as exc:
            _close(conn)
            raise classify(exc) from exc
        except BaseException:
            _close(conn)  # cancelled mid-conversation: the connection's state is unknown
            raise
        finally:
            self._idle.put_nowait(conn)
        return SendResult(self.name, mail.message_id)

    async def _send(self, conn: SmtpConnection, mail: Email) -> None:
        data, utf8 = mail.data, mail.utf8
        await conn.send(mail.sender, mail.recipient, data, utf8=utf8, timeout=self.timeout)


def _close(conn: SmtpConnection | None) -> None:
    """A closed connection goes back to the pool as an empty slot."""
    if conn is not None:
        conn.close()
