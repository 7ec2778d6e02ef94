"""An SMTP client connection that sends one message after another, pipelined.

With ESMTP PIPELINING (RFC 2920, offered by Postfix, Exim and the big relays) a message's
MAIL FROM, RCPT TO and DATA go out in one write and its text in a second: two round trips per
message instead of four, each a wake-up of the event loop on both sides. aiosmtplib, which Herald
used before, waits for every reply before the next command and cannot pipeline; it also parsed
each address again, where ``email_message.build_email`` has already checked them. A relay that
does not offer PIPELINING is spoken to one command at a time.

Setting up a connection: the greeting, EHLO (HELO if the relay knows no ESMTP), STARTTLS (when
required, or offered and not turned off), AUTH PLAIN or LOGIN, and EHLO again after TLS.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
from dataclasses import dataclass
from typing import Final

# A reply line longer than this is not SMTP (RFC 5321 allows 512 octets).
_MAX_REPLY_LINE: Final = 8192


class SmtpReplyError(Exception):
    """The relay refused a command: ``code`` is its reply code (4xx: try later; 5xx: never)."""

    def __init__(self, code: int, text: str, command: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.command = command  # MAIL, RCPT, DATA, ... (what was refused)


class SmtpConnectionLost(Exception):
    """The connection closed or broke. ``before_reply``: no reply to this message's first
    command came, so the relay cannot have taken it (a reused connection the relay dropped
    while it sat idle)."""

    def __init__(self, message: str, *, before_reply: bool = False) -> None:
        super().__init__(message)
        self.before_reply = before_reply


class SmtpUnsupported(Exception):
    """The relay lacks what is needed: what the message needs (SMTPUTF8: ``permanent``), or
    what the configuration does (STARTTLS, an AUTH mechanism we speak)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to connect (from ``HERALD_SMTP_URL``, see ``smtp.parse_smtp_url``)."""

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


class SmtpConnection:
    """One connection to a relay; one message at a time (callers take turns, see SmtpProvider)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.extensions: dict[str, str] = {}  # EHLO keywords (lower case) → parameters
        self.closed = False

    @classmethod
    async def open(cls, target: SmtpTarget, tls: ssl.SSLContext, timeout: float) -> SmtpConnection:
        """Connect, greet, secure (``tls``: for implicit TLS or STARTTLS) and log in; raises
        SmtpReplyError, SmtpConnectionLost, SmtpUnsupported, OSError or TimeoutError."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            conn = cls(reader, writer)
            try:
                if target.use_tls:
                    await writer.start_tls(tls, server_hostname=target.host)
                await conn._expect(await conn._reply(), 220, "greeting")
                await conn._hello()
                if not target.use_tls:
                    await conn._secure(target, tls)
                if target.username is not None:
                    await conn._login(target.username, target.password or "")
            except BaseException:
                await conn._abort()
                raise
        return conn

    async def send(
        self, sender: str, recipient: str, data: bytes, *, utf8: bool, timeout: float
    ) -> Reply:
        """Send one message (``data``: its bytes with CRLF line ends) to one recipient; the
        relay's reply to the end of the data. Raises SmtpReplyError (the connection stays
        usable), SmtpConnectionLost, SmtpUnsupported, OSError or TimeoutError."""
        if utf8 and "smtputf8" not in self.extensions:
            raise SmtpUnsupported("the relay does not offer SMTPUTF8 (RFC 6531)", permanent=True)
        mail = b"MAIL FROM:<" + _address(sender) + (b"> SMTPUTF8\r\n" if utf8 else b">\r\n")
        rcpt = b"RCPT TO:<" + _address(recipient) + b">\r\n"
        text = data.replace(b"\n.", b"\n..")  # dot-stuffing: every line ends in CRLF
        if text.startswith(b"."):
            text = b"." + text
        if not text.endswith(b"\r\n"):
            text += b"\r\n"
        async with asyncio.timeout(timeout):
            if "pipelining" in self.extensions:
                self._write(mail + rcpt + b"DATA\r\n")
                replies = [await self._first_reply()]
                replies += [await self._reply(), await self._reply()]
            else:
                replies = await self._one_by_one(mail, rcpt)
            refused = _refusal(replies)
            if refused is not None:
                await self._after_refusal(replies)
                raise refused
            self._write(text + b".\r\n")
            done = await self._reply()
        if done.code != 250:
            raise SmtpReplyError(done.code, done.text, "DATA")
        return done

    async def quit(self, timeout: float) -> None:
        """Say goodbye and close, waiting (up to ``timeout``) until the connection is closed."""
        try:
            async with asyncio.timeout(timeout):
                self._write(b"QUIT\r\n")
                await self._reply()
                self.close()
                await self._writer.wait_closed()
        except (SmtpConnectionLost, SmtpReplyError, OSError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._writer.close()

    async def _abort(self) -> None:
        """Close, and let the loop run the close it scheduled: the caller may be about to end
        the loop, which would leave the socket open. (Not wait_closed: after a failed TLS
        handshake the stream is never told, and it would wait for ever.)"""
        self.close()
        await asyncio.sleep(0)

    async def _one_by_one(self, mail: bytes, rcpt: bytes) -> list[Reply]:
        self._write(mail)
        replies = [await self._first_reply()]
        if replies[0].code == 250:
            self._write(rcpt)
            replies.append(await self._reply())
            if replies[1].code in (250, 251):
                self._write(b"DATA\r\n")
                replies.append(await self._reply())
        return replies

    async def _first_reply(self) -> Reply:
        try:
            return await self._reply()
        except SmtpConnectionLost as exc:
            raise SmtpConnectionLost(str(exc), before_reply=True) from exc

    async def _after_refusal(self, replies: list[Reply]) -> None:
        """A clean slate for the next message (RSET), or a closed connection: never an error
        of its own, so the caller reports the refusal itself, not what followed it."""
        try:
            if len(replies) == 3 and replies[2].code == 354:
                # DATA was accepted although a command before it was not: end the empty
                # message (the relay rejects it: no valid recipient).
                self._write(b".\r\n")
                await self._reply()
            self._write(b"RSET\r\n")
            if (await self._reply()).code == 250:
                return
        except SmtpConnectionLost:
            pass
        self.close()  # state unknown, or gone: a fresh connection next time

    async def _secure(self, target: SmtpTarget, tls: ssl.SSLContext) -> None:
        offered = "starttls" in self.extensions
        if target.start_tls and not offered:
            raise SmtpUnsupported("the relay does not offer STARTTLS, which the URL requires")
        if offered and target.start_tls is not False:
            await self._command(b"STARTTLS", 220, "STARTTLS")
            await self._writer.start_tls(tls, server_hostname=target.host)
            await self._hello()  # what it offers may differ once encrypted (AUTH)

    async def _hello(self) -> None:
        name = _local_name()
        self._write(b"EHLO " + name + b"\r\n")
        reply = await self._reply()
        if reply.code == 250:
            self.extensions = _extensions(reply.text)
            return
        # A relay from before ESMTP.
        await self._command(b"HELO " + name, 250, "HELO")
        self.extensions = {}

    async def _login(self, username: str, password: str) -> None:
        mechanisms = self.extensions.get("auth", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            await self._command(f"AUTH PLAIN {token}".encode(), 235, "AUTH")
        elif "LOGIN" in mechanisms:
            await self._command(b"AUTH LOGIN", 334, "AUTH")
            await self._command(base64.b64encode(username.encode()), 334, "AUTH")
            await self._command(base64.b64encode(password.encode()), 235, "AUTH")
        else:
            offered = " ".join(mechanisms) or "none"
            raise SmtpUnsupported(f"no AUTH mechanism in common (PLAIN, LOGIN; offered: {offered})")

    async def _command(self, line: bytes, expected: int, name: str) -> Reply:
        self._write(line + b"\r\n")
        return await self._expect(await self._reply(), expected, name)

    @staticmethod
    async def _expect(reply: Reply, code: int, command: str) -> Reply:
        if reply.code != code:
            raise SmtpReplyError(reply.code, reply.text, command)
        return reply

    def _write(self, data: bytes) -> None:
        if self.closed or self._writer.is_closing():
            raise SmtpConnectionLost("the connection is closed", before_reply=True)
        self._writer.write(data)

    async def _reply(self) -> Reply:
        """One reply, its lines joined ("250-a", "250 b" → 250, "a\\nb")."""
        lines: list[bytes] = []
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                self.close()
                raise SmtpConnectionLost("the relay closed the connection") from exc
            except asyncio.LimitOverrunError as exc:
                self.close()
                raise SmtpConnectionLost("a reply line too long for SMTP") from exc
            except OSError as exc:
                self.close()
                raise SmtpConnectionLost(f"{type(exc).__name__}: {exc}") from exc
            if len(line) > _MAX_REPLY_LINE or len(line) < 4 or not line[:3].isdigit():
                self.close()
                raise SmtpConnectionLost(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:].strip())
            if line[3:4] != b"-":
                text = b"\n".join(lines).decode("utf-8", "replace")
                return Reply(int(line[:3]), text)


def _refusal(replies: list[Reply]) -> SmtpReplyError | None:
    """The first refusal among the replies to MAIL, RCPT and DATA, if any."""
    for reply, command, accepted in zip(
        replies, ("MAIL", "RCPT", "DATA"), ((250,), (250, 251), (354,)), strict=False
    ):
        if reply.code not in accepted:
            return SmtpReplyError(reply.code, reply.text, command)
    return None


def _extensions(text: str) -> dict[str, str]:
    """EHLO's reply lines after the first, as keyword → parameters."""
    found = {}
    for line in text.split("\n")[1:]:
        keyword, _, params = line.strip().partition(" ")
        found[keyword.lower()] = params
    return found


def _address(address: str) -> bytes:
    if "\r" in address or "\n" in address or "<" in address or ">" in address:
        raise ValueError(f"not an envelope address: {address!r}")
    return address.encode("utf-8")


@functools.cache
def _local_name() -> bytes:
    """What EHLO says we are: the host's name when it is one, else an address literal."""
    name = socket.getfqdn()
    if not name or not name.isascii() or " " in name:
        return b"[127.0.0.1]"
    return name.encode("ascii")
