"""Email over SMTP with aiosmtplib: a small pool of reused connections per worker.

Failures become typed errors: 4xx replies, timeouts and lost connections are transient;
5xx replies to the message or recipient are permanent.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from herald.channels.base import OutboundMessage, SendResult
from herald.channels.email_message import Email, build_email
from herald.domain.headers import is_single_line
from herald.errors import ConfigError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from herald.observability.logging import get_logger

if TYPE_CHECKING:
    from herald.channels import Dependencies
    from herald.config import Settings

log = get_logger(__name__)

_STARTTLS = {"auto": None, "require": True, "off": False}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # implicit TLS (smtps://)
    start_tls: bool | None = None  # None: upgrade when the server offers STARTTLS
    validate_certs: bool = True
    ca_file: str | None = None  # CA certificates (PEM) to trust instead of the system's

    def __str__(self) -> str:  # never shows the password
        return f"{'smtps' if self.use_tls else 'smtp'}://{self.host}:{self.port}"


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
    """Map an aiosmtplib or socket failure to a transient or permanent delivery error."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if any(code >= 500 for code in codes):
            return PermanentDeliveryError(f"recipient refused: {detail}")
        # The relay is up; the recipient's domain (or its policy) defers this one.
        return TransientDeliveryError(f"recipient deferred: {detail}", destination=True)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError):
        # Our configuration or the server is wrong, not the message: worth retrying later.
        return TransientDeliveryError(f"SMTP {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        kind = PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError
        return kind(f"SMTP {exc.code} {exc.message}")
    return TransientDeliveryError(f"{type(exc).__name__}: {exc}")


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
        )

    def __init__(
        self,
        target: SmtpTarget,
        *,
        sender: str,
        timeout: float = 20.0,
        pool_size: int = 4,
        name: str = "smtp",
    ) -> None:
        if not is_single_line(sender):
            raise ConfigError(f"{name}: the email sender must be a single line")
        self.name = name
        self.target = target
        self.sender = sender
        self.timeout = timeout
        self.concurrency = pool_size
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._idle.put_nowait(self._client())

    def _client(self) -> aiosmtplib.SMTP:
        t = self.target
        return aiosmtplib.SMTP(
            hostname=t.host,
            port=t.port,
            username=t.username,
            password=t.password,
            use_tls=t.use_tls,
            start_tls=t.start_tls,
            validate_certs=t.validate_certs,
            cert_bundle=t.ca_file,
            timeout=self.timeout,
        )

    async def start(self) -> None:
        log.info("smtp.configured", server=str(self.target), pool_size=self._idle.qsize())

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    async def reachable(self) -> bool:
        """Whether the relay greets a new connection: a cheap look while its circuit is open."""
        client = self._client()
        try:
            async with asyncio.timeout(self.timeout):
                await client.connect()
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
            return False
        return True

    async def send(self, message: OutboundMessage) -> SendResult:
        try:
            mail = build_email(message, self.sender)  # refuses header injection, permanently
        except ValueError as exc:
            raise PermanentDeliveryError(f"cannot build email: {exc}") from exc
        client = await self._idle.get()
        try:
            reused = client.is_connected
            try:
                await self._send(client, mail)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The server dropped a connection that sat idle in the pool: that says
                # nothing about this message, so reconnect once instead of burning an attempt.
                client.close()
                await self._send(client, mail)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise classify(exc) from exc
        except BaseException:
            client.close()  # cancelled mid-conversation: the connection's state is unknown
            raise
        finally:
            self._idle.put_nowait(client)
        return SendResult(self.name, mail.message_id)

    @staticmethod
    async def _send(client: aiosmtplib.SMTP, mail: Email) -> None:
        if not client.is_connected:
            await client.connect()
        # SMTPUTF8 for an address that needs it: aiosmtplib refuses a relay without it.
        options = ["SMTPUTF8"] if mail.utf8 else None
        await client.sendmail(mail.sender, [mail.recipient], mail.data, mail_options=options)
