"""Herald's SMTP client against real SMTP servers: aiosmtpd (the test sink, with and without
PIPELINING, with AUTH) and, to see what goes over the wire, a relay that records each read."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from herald.channels.base import OutboundMessage
from herald.channels.smtp import SmtpProvider, parse_smtp_url
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from tests.services import free_port
from tests.smtp_sink import SmtpSink, _Handler

SENDER = "Herald <herald@example.com>"


def message(n: int = 1, recipient: str = "a@example.com", body: str = "Hello") -> OutboundMessage:
    return OutboundMessage(
        delivery_id=f"dlv-{n}",
        notification_id=f"ntf-{n}",
        channel="email",
        recipient=recipient,
        subject=f"Message {n}",
        body=body,
        attempt=1,
    )


@pytest.fixture
async def smtp(smtp_sink: SmtpSink) -> AsyncIterator[SmtpProvider]:
    provider = SmtpProvider(parse_smtp_url(smtp_sink.url), sender=SENDER, pool_size=1, timeout=5)
    try:
        yield provider
    finally:
        await provider.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
async def test_messages_go_one_after_another_over_one_connection(
    smtp_sink: SmtpSink, smtp: SmtpProvider, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    for n in range(5):
        await smtp.send(message(n, recipient=f"user{n}@example.com"))
    received = await smtp_sink.wait_for(5)
    assert [(m.mail_from, m.rcpt_tos, m.message["Subject"]) for m in received] == [
        ("herald@example.com", [f"user{n}@example.com"], f"Message {n}") for n in range(5)
    ]
    assert smtp_sink.hellos == 1


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
async def test_a_refused_recipient_fails_its_message_and_the_connection_goes_on(
    smtp_sink: SmtpSink, smtp: SmtpProvider, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    smtp_sink.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    smtp_sink.rcpt_replies["later@example.com"] = "451 4.7.1 Greylisted"
    with pytest.raises(
        PermanentDeliveryError, match=re.escape("recipient refused: 550 5.1.1 No such user")
    ):
        await smtp.send(message(1, recipient="gone@example.com"))
    with pytest.raises(
        TransientDeliveryError, match=re.escape("recipient deferred: 451 4.7.1 Greylisted")
    ):
        await smtp.send(message(2, recipient="later@example.com"))
    await smtp.send(message(3))
    [received] = await smtp_sink.wait_for(1)
    assert (received.rcpt_tos, received.message["Subject"]) == (["a@example.com"], "Message 3")
    assert smtp_sink.hellos == 1  # RSET after each refusal, not a new connection


async def test_a_refused_message_text_is_transient_or_permanent_by_its_code(
    smtp_sink: SmtpSink, smtp: SmtpProvider
) -> None:
    smtp_sink.fail_data(1)
    with pytest.raises(TransientDeliveryError, match=re.escape("SMTP 451 4.3.0 Try again later")):
        await smtp.send(message(1))
    smtp_sink.fail_data(1, "554 5.6.0 Message refused")
    with pytest.raises(PermanentDeliveryError, match=re.escape("SMTP 554 5.6.0 Message refused")):
        await smtp.send(message(2))
    await smtp.send(message(3))
    assert [m.message["Subject"] for m in await smtp_sink.wait_for(1)] == ["Message 3"]
    assert smtp_sink.hellos == 1


async def test_lines_starting_with_a_dot_arrive_as_written(
    smtp_sink: SmtpSink, smtp: SmtpProvider
) -> None:
    body = ".\n..twice\nmiddle . line\n.end"
    await smtp.send(message(body=body))
    [received] = await smtp_sink.wait_for(1)
    assert received.message.get_content() == body.replace("\n", "\r\n") + "\r\n"


async def test_a_connection_the_relay_dropped_while_idle_is_replaced_without_failing(
    smtp_sink: SmtpSink, smtp: SmtpProvider
) -> None:
    await smtp.send(message(1))
    smtp_sink.stop()  # closes the pooled connection from the relay's side
    smtp_sink.start()
    await smtp.send(message(2))  # no error: nothing had been taken on the dead connection
    received = await smtp_sink.wait_for(2)
    assert [m.message["Subject"] for m in received] == ["Message 1", "Message 2"]
    assert smtp_sink.hellos == 2


async def test_a_relay_without_smtputf8_refuses_a_utf8_address_permanently() -> None:
    sink = SmtpSink()
    controller = Controller(
        _Handler(sink), hostname=sink.host, port=sink.port, enable_SMTPUTF8=False
    )
    controller.start()
    smtp = SmtpProvider(parse_smtp_url(sink.url), sender=SENDER, pool_size=1, timeout=5)
    try:
        with pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
            await smtp.send(message(recipient="josé@example.com"))
        await smtp.send(message(2))  # ASCII goes on
    finally:
        await smtp.close()
        controller.stop()
    assert [m.message["Subject"] for m in sink.messages()] == ["Message 2"]


class _Accounts:
    def __init__(self, password: str) -> None:
        self.password = password
        self.logins: list[str] = []

    def __call__(
        self, server: object, session: object, envelope: object, mechanism: str, data: object
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        ok = (data.login, data.password) == (b"herald", self.password.encode())
        self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 when not ok


@pytest.fixture
def auth_relay(request: pytest.FixtureRequest) -> Iterator[tuple[SmtpSink, _Accounts]]:
    """A relay that wants AUTH, offering only the mechanism ``request.param``."""
    sink, accounts = SmtpSink(), _Accounts("s3cret")
    others = {"PLAIN", "LOGIN"} - {request.param}
    controller = Controller(
        _Handler(sink),
        hostname=sink.host,
        port=sink.port,
        authenticator=accounts,
        auth_required=True,
        auth_require_tls=False,  # loopback, in a test
        auth_exclude_mechanism=others,
    )
    controller.start()
    try:
        yield sink, accounts
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("auth_relay", ["PLAIN", "LOGIN"], indirect=True)
async def test_a_relay_that_wants_auth_gets_the_user_and_password_of_the_url(
    auth_relay: tuple[SmtpSink, _Accounts],
) -> None:
    sink, accounts = auth_relay
    good = SmtpProvider(
        parse_smtp_url(f"smtp://herald:s3cret@{sink.host}:{sink.port}"), sender=SENDER, timeout=5
    )
    bad = SmtpProvider(
        parse_smtp_url(f"smtp://herald:wrong@{sink.host}:{sink.port}"), sender=SENDER, timeout=5
    )
    try:
        await good.send(message(1))
        await good.send(message(2))
        with pytest.raises(TransientDeliveryError, match="AUTH: 535"):
            await bad.send(message(3))
    finally:
        await good.close()
        await bad.close()
    assert [m.message["Subject"] for m in sink.messages()] == ["Message 1", "Message 2"]
    assert len(accounts.logins) == 2  # one login per connection, not per message


class _RecordingRelay(asyncio.Protocol):
    """A minimal relay that records each chunk it reads, and answers only whole commands. It
    refuses recipients at ``gone.example`` and then, as some relays do, hangs up after DATA."""

    def __init__(self, pipelining: bool, reads: list[bytes]) -> None:
        self.pipelining, self.reads, self.buffer, self.in_data = pipelining, reads, b"", False
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 relay ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer, self.in_data = self.buffer[end + 5 :], False
                self.transport.write(b"250 queued\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                return
            self.buffer = rest
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                self.transport.write(b"250-relay\r\n" + extra + b"250 8BITMIME\r\n")
            elif verb == b"MAIL":
                self.refused = False
                self.transport.write(b"250 ok\r\n")
            elif verb == b"RCPT" and b"@gone.example" in line:
                self.refused = True
                self.transport.write(b"550 5.1.1 no such user\r\n")
            elif verb == b"DATA" and self.refused:
                self.transport.write(b"503 5.5.1 no valid recipients\r\n")
                self.transport.close()
                return
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
            else:
                self.transport.write(b"250 ok\r\n")


@asynccontextmanager
async def recording_relay(
    pipelining: bool, reads: list[bytes], **provider: Any
) -> AsyncIterator[SmtpProvider]:
    """A _RecordingRelay on a free port, and a provider sending to it."""
    port = free_port()
    server = await asyncio.get_running_loop().create_server(
        lambda: _RecordingRelay(pipelining, reads), "127.0.0.1", port
    )
    smtp = SmtpProvider(parse_smtp_url(f"smtp://127.0.0.1:{port}"), sender=SENDER, **provider)
    try:
        yield smtp
    finally:
        await smtp.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
async def test_with_pipelining_the_envelope_and_data_go_in_one_write(pipelining: bool) -> None:
    reads: list[bytes] = []
    async with recording_relay(pipelining, reads, timeout=5) as smtp:
        await smtp.send(message(1))
        before = len(reads)
        await smtp.send(message(2))
        second = reads[before:]
    envelope = b"MAIL FROM:<herald@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"
    if pipelining:
        assert second[0] == envelope
        assert len(second) == 2  # then the text, in one write
    else:
        assert b"".join(second[:3]) == envelope
        assert len(second) == 4
    assert second[-1].startswith(b"From: Herald <herald@example.com>\r\n")
    assert second[-1].endswith(b"\r\n.\r\n")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
async def test_a_refusal_is_reported_as_such_when_the_relay_hangs_up_after_it(
    pipelining: bool,
) -> None:
    reads: list[bytes] = []
    async with recording_relay(pipelining, reads, pool_size=1) as smtp:
        with pytest.raises(PermanentDeliveryError, match=re.escape("recipient refused: 550")):
            await smtp.send(message(1, recipient="someone@gone.example"))
        await smtp.send(message(2))
    # Pipelined, DATA went out and the relay hung up: the next message took a new connection.
    # One by one, DATA never went out, and RSET kept the connection.
    assert sum(r.startswith(b"EHLO") for r in reads) == (2 if pipelining else 1)
