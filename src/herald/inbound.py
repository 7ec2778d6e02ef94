"""`herald inbound`: the SMTP listener for the bounce domain (HERALD_BOUNCE_DOMAIN).

Point the bounce domain's MX at it. It takes mail only for return paths at that domain (any
other recipient is refused: it relays nothing), reads the reports among it as receipts
(channels/bounce_mail) and answers 250 once they are stored; 451 while the database is out of
reach, so the sending server tries again later. Mail that carries no receipt (an out-of-office
reply) is accepted and dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from herald.channels.bounce_mail import receipts_in
from herald.domain import verp
from herald.observability.logging import get_logger
from herald.pipeline.stages.receipts import Receipts
from herald.store.database import UNAVAILABLE_ERRORS

log = get_logger(__name__)


class BounceHandler:
    """aiosmtpd's handler: RCPT checks the recipient, DATA stores the receipts."""

    def __init__(self, receipts: Receipts, domain: str) -> None:
        self.receipts = receipts
        self.domain = domain

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if verp.delivery_of(address, self.domain) is None:
            return f"550 5.1.1 <{address}>: only bounces to {self.domain} are taken here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        found = receipts_in(raw, envelope_recipients=envelope.rcpt_tos, bounce_domain=self.domain)
        if not found:
            log.info("inbound.no_receipt", rcpt=envelope.rcpt_tos, peer=str(session.peer))
            return "250 2.0.0 OK (no report)"
        try:
            outcomes = await self.receipts.take(found, signed=False)
        except Exception as exc:
            # The database out of reach, or a fault of ours: the sender keeps the report and
            # tries again (a 5xx would make it give up, and the bounce would be lost).
            kind = (
                "inbound.unavailable" if isinstance(exc, UNAVAILABLE_ERRORS) else "inbound.failed"
            )
            log.warning(kind, error=f"{type(exc).__name__}: {exc}"[:500])
            return "451 4.3.0 cannot store it now: try again later"
        log.info("inbound.receipts", outcomes=[str(o) for o in outcomes])
        return "250 2.0.0 OK"


async def serve_inbound(
    receipts: Receipts,
    *,
    domain: str,
    host: str,
    port: int,
    max_bytes: int,
    stop: asyncio.Event,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Listen until ``stop``; ``started`` gets the port (useful with port 0)."""
    handler = BounceHandler(receipts, domain)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            hostname=domain,
            ident="Herald inbound",
            # A bounce names one return path: a session that keeps trying recipients or
            # messages is not a mail server reporting.
            command_call_limit={"RCPT": 10, "DATA": 10, "*": 50},
        ),
        host,
        port,
    )
    bound = server.sockets[0].getsockname()[1]
    log.info("inbound.listening", host=host, port=bound, domain=domain)
    if started is not None:
        started.set_result(bound)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
