"""Bounces by mail: email goes out with a VERP return path; the mail server (a real aiosmtpd
MTA) accepts it, then finds the recipient's server refusing and sends a DSN back to Herald's
inbound SMTP listener, as Postfix would. A hard bounce marks the delivery BOUNCED and
suppresses the address (the next email to it is not sent); a full mailbox leaves it
UNDELIVERED without suppressing; a delay is a soft bounce that keeps SENT. A complaint piped
in as a raw message (an MTA's pipe to the API) marks it COMPLAINED and suppresses."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from herald.domain import verp
from herald.inbound import serve_inbound
from herald.store.tables import delivery_receipts
from tests.fakes.mta import FakeMta, bounce_report
from tests.pipeline_harness import Pipeline, PipelineFactory

DOMAIN = "bounces.herald.test"
GONE, FULL, SLOW, FINE = (f"{n}@example.org" for n in ("gone", "full", "slow", "fine"))


@pytest.fixture
def mta() -> Iterator[FakeMta]:
    server = FakeMta().start()
    server.refuse[GONE] = ("failed", "5.1.1", f"550 5.1.1 <{GONE}>: User unknown")
    server.refuse[FULL] = ("failed", "5.2.2", f"552 5.2.2 <{FULL}>: Mailbox full")
    server.refuse[SLOW] = ("delayed", "4.4.1", f"451 4.4.1 <{SLOW}>: Connection timed out")
    yield server
    server.stop()


@asynccontextmanager
async def inbound(p: Pipeline) -> AsyncIterator[int]:
    """Herald's inbound listener on a free port, in this pipeline's process."""
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_inbound(
            p.runtime.receipts,
            domain=DOMAIN,
            host="127.0.0.1",
            port=0,
            max_bytes=1_048_576,
            stop=stop,
            started=started,
        )
    )
    port = await started
    try:
        yield port
    finally:
        stop.set()
        await task


async def delivery_status(p: Pipeline, notification_id: str, wanted: str) -> dict[str, Any]:
    for _ in range(600):
        body = await p.get(notification_id)
        if body["deliveries"][0]["status"] == wanted and body["status"] != "PENDING":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"never {wanted}: {body}")


async def receipts_of(p: Pipeline, notification_id: str) -> list[tuple[str, str]]:
    timeline = (await p.http.get(f"/api/v1/notifications/{notification_id}/timeline")).json()
    return [(s["status"], s["detail"]) for s in timeline["steps"] if s["step"] == "receipt"]


async def test_a_dsn_from_the_mail_server_bounces_and_suppresses(
    start_pipeline: PipelineFactory, mta: FakeMta
) -> None:
    async with start_pipeline(smtp_url=mta.url, bounce_domain=DOMAIN) as p, inbound(p) as port:
        mta.bounce_to = ("127.0.0.1", port)
        sent = {to: (await p.send(recipient=to))["id"] for to in (GONE, FULL, SLOW, FINE)}
        gone = await delivery_status(p, sent[GONE], "BOUNCED")
        full = await delivery_status(p, sent[FULL], "UNDELIVERED")
        for _ in range(200):  # the soft bounce is only recorded
            if await receipts_of(p, sent[SLOW]):
                break
            await asyncio.sleep(0.05)
        # A DSN can beat the worker's commit of SENT: the receipt is then recorded first.
        slow = await delivery_status(p, sent[SLOW], "SENT")
        slow_receipts = await receipts_of(p, sent[SLOW])
        suppressed = {
            to: (await p.http.get(f"/api/v1/suppressions/email/{to}")).status_code
            for to in (GONE, FULL, SLOW)
        }
        again = await p.send(recipient=GONE)
        skipped = await delivery_status(p, again["id"], "SKIPPED")
        delivery_of = {to: (await p.get(n))["deliveries"][0]["id"] for to, n in sent.items()}

    assert (gone["status"], full["status"], slow["status"]) == ("FAILED", "FAILED", "SENT")
    assert slow["deliveries"][0]["status"] == "SENT"
    assert slow_receipts == [("soft_bounce", "recorded")]
    assert suppressed == {GONE: 200, FULL: 404, SLOW: 404}
    assert skipped["deliveries"][0]["skip_reason"] == "suppressed"
    # Each went out with its own return path, and nothing more went to the bounced address.
    return_paths = {m.rcpt_tos[0]: m.mail_from for m in mta.relayed}
    assert return_paths == {to: verp.return_path(delivery_of[to], DOMAIN) for to in sent}
    assert [m.rcpt_tos for m in mta.relayed].count([GONE]) == 1
    assert {answer for _, answer in mta.bounces_sent} == {"250"}


async def test_the_listener_takes_mail_only_for_return_paths(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(bounce_domain=DOMAIN) as p, inbound(p) as port:

        def send(rcpt: str) -> Any:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                return client.sendmail("someone@example.net", [rcpt], b"Subject: hi\r\n\r\nhi")

        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(send, "postmaster@example.com")  # no open relay
        # An out-of-office reply to a return path: taken, and no receipt.
        assert await asyncio.to_thread(send, verp.return_path("0" * 8, DOMAIN)) == {}


async def test_a_complaint_piped_in_by_the_mta_suppresses(start_pipeline: PipelineFactory) -> None:
    async with start_pipeline(bounce_domain=DOMAIN) as p:
        accepted = await p.send(recipient=FINE)
        await p.wait_until_done(accepted["id"])
        delivery_id = (await p.get(accepted["id"]))["deliveries"][0]["id"]
        report = complaint(delivery_id)
        posted = await p.http.post(
            "/api/v1/receipts/mail", content=report, headers={"content-type": "message/rfc822"}
        )
        again = await p.http.post("/api/v1/receipts/mail", content=report)
        body = await p.get(accepted["id"])
        listed = await p.http.get(f"/api/v1/suppressions/email/{FINE}")

    assert posted.status_code == 200, posted.text
    assert posted.json() == {
        "receipts": [{"delivery_id": delivery_id, "kind": "complained", "outcome": "applied"}]
    }
    assert again.json()["receipts"][0]["outcome"] == "duplicate"
    assert body["deliveries"][0]["status"] == "COMPLAINED"
    assert body["status"] == "DELIVERED"  # it arrived; the recipient did not want it
    assert listed.json()["reason"] == "complaint"


def complaint(delivery_id: str) -> bytes:
    """A feedback loop's abuse report (RFC 5965) about the email of ``delivery_id``."""
    return f"""From: fbl@isp.example
To: {verp.return_path(delivery_id, DOMAIN)}
Subject: FW: Your code
Message-ID: <fbl-{delivery_id}@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="fbl"

--fbl
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--fbl
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ISP-FBL/1.0
Version: 1
Original-Mail-From: <{verp.return_path(delivery_id, DOMAIN)}>

--fbl
Content-Type: text/rfc822-headers

From: Herald <herald@localhost>
Message-ID: <{delivery_id}@localhost>

--fbl--
""".replace("\n", "\r\n").encode()


async def test_mail_about_no_delivery_of_ours_is_not_kept_and_a_late_complaint_still_suppresses(
    start_pipeline: PipelineFactory,
) -> None:
    """Anyone can send mail: a report for a delivery Herald does not have (or of another
    channel) is dropped, not stored; a delivery gets 50 receipts at most. A complaint about
    a delivery that ended failed (the provider had taken it after all) still suppresses."""
    async with start_pipeline(bounce_domain=DOMAIN, retry_max_attempts=1) as p:
        unknown = await p.http.post("/api/v1/receipts/mail", content=complaint("0" * 36))
        p.sink.rcpt_replies[FINE] = "451 4.4.1 try later"  # one attempt: dead-lettered
        accepted = await p.send(recipient=FINE)
        done = await p.wait_until_done(accepted["id"])
        delivery_id = done["deliveries"][0]["id"]
        late = await p.http.post("/api/v1/receipts/mail", content=complaint(delivery_id))
        listed = await p.http.get(f"/api/v1/suppressions/email/{FINE}")
        flood = [
            await p.http.post(
                "/api/v1/receipts/mail",
                content=bounce_report(
                    delivery_id,
                    to=verp.return_path(delivery_id, DOMAIN),
                    action="delayed",
                    status="4.4.1",
                ),
            )
            for _ in range(50)
        ]
        async with p.runtime.db.read() as conn:
            kept = await conn.scalar(sa.select(sa.func.count()).select_from(delivery_receipts))

    assert unknown.json() == {
        "receipts": [{"delivery_id": "0" * 36, "kind": "complained", "outcome": "dropped"}]
    }
    assert done["deliveries"][0]["status"] == "DEAD_LETTERED"
    assert late.json()["receipts"][0]["outcome"] == "late"
    assert listed.json()["reason"] == "complaint"
    outcomes = [r.json()["receipts"][0]["outcome"] for r in flood]
    assert outcomes == ["recorded"] * 49 + ["dropped"]
    assert kept == 50
