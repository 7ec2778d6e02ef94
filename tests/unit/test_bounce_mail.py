"""Bounces and complaints as they come back by mail, read into receipts."""

from __future__ import annotations

import pytest

from herald.channels.bounce_mail import receipts_in
from herald.domain import verp
from herald.domain.receipts import ReceiptKind

DOMAIN = "bounces.herald.test"
DELIVERY = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def dsn(action: str, status: str, diagnostic: str, *, returned: str = "", to: str = "") -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464)."""
    to = to or verp.return_path(DELIVERY, DOMAIN)
    return f"""Return-Path: <>
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: <20261205101010.ABC123@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="ABC123.1733393410/mx.example.net"

--ABC123.1733393410/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

--ABC123.1733393410/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: ABC123
Arrival-Date: Sat,  5 Dec 2026 10:10:09 +0000 (UTC)

Final-Recipient: rfc822; ann@example.org
Original-Recipient: rfc822;ann@example.org
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; {diagnostic}

--ABC123.1733393410/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Herald <herald@example.com>
To: ann@example.org
Subject: Your code
{returned}
--ABC123.1733393410/mx.example.net--
""".replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", ReceiptKind.BOUNCED),  # no such user
        ("failed", "5.1.2", ReceiptKind.BOUNCED),  # no such domain
        ("failed", "5.2.1", ReceiptKind.BOUNCED),  # mailbox disabled
        ("failed", "5.2.2", ReceiptKind.UNDELIVERED),  # mailbox full: the address is fine
        ("failed", "5.7.1", ReceiptKind.UNDELIVERED),  # refused by policy
        ("failed", "4.4.1", ReceiptKind.SOFT_BOUNCE),
        ("delayed", "4.4.1", ReceiptKind.SOFT_BOUNCE),
        ("delivered", "2.0.0", ReceiptKind.DELIVERED),
        ("relayed", "2.0.0", ReceiptKind.PROGRESS),
    ],
)
def test_a_dsn_names_its_delivery_by_the_return_path(
    action: str, status: str, kind: ReceiptKind
) -> None:
    [receipt] = receipts_in(
        dsn(action, status, f"550 {status} <ann@example.org>: gone"),
        envelope_recipients=[verp.return_path(DELIVERY, DOMAIN)],
        bounce_domain=DOMAIN,
    )
    assert receipt.delivery_id == DELIVERY
    assert receipt.kind == kind
    assert receipt.code == status
    assert receipt.detail == f"smtp; 550 {status} <ann@example.org>: gone"
    assert receipt.provider == "mail"


def test_without_a_return_path_the_returned_headers_name_the_delivery() -> None:
    for returned in (f"X-Herald-Delivery-Id: {DELIVERY}", f"Message-ID: <{DELIVERY}@example.com>"):
        raw = dsn("failed", "5.1.1", "550 5.1.1 unknown", returned=returned, to="x@example.com")
        [receipt] = receipts_in(raw, envelope_recipients=["herald@example.com"])
        assert (receipt.delivery_id, receipt.kind) == (DELIVERY, ReceiptKind.BOUNCED)


def test_the_same_report_twice_is_one_receipt_and_another_report_another() -> None:
    raw = dsn("failed", "5.1.1", "550 5.1.1 unknown")
    [first] = receipts_in(raw, bounce_domain=DOMAIN)
    [again] = receipts_in(raw, bounce_domain=DOMAIN)
    [other] = receipts_in(raw.replace(b"ABC123@mx", b"DEF456@mx"), bounce_domain=DOMAIN)
    assert first.key == again.key != other.key


def test_a_complaint_in_the_abuse_reporting_format() -> None:
    raw = f"""From: feedback@isp.example
To: {verp.return_path(DELIVERY, DOMAIN)}
Subject: Abuse report
Message-ID: <arf-1@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part"

--part
Content-Type: text/plain

This is an email abuse report.
--part
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ISP-FBL/1.0
Version: 1

--part
Content-Type: message/rfc822

From: Herald <herald@example.com>
Message-ID: <{DELIVERY}@example.com>
Subject: Your code

Hello
--part--
""".encode()
    [receipt] = receipts_in(raw, bounce_domain=DOMAIN)
    assert (receipt.kind, receipt.code, receipt.delivery_id) == (
        ReceiptKind.COMPLAINED,
        "abuse",
        DELIVERY,
    )


def test_an_out_of_office_reply_is_no_receipt() -> None:
    raw = f"""From: ann@example.org
To: {verp.return_path(DELIVERY, DOMAIN)}
Subject: Out of office
Auto-Submitted: auto-replied

I am away until Monday.
""".encode()
    assert receipts_in(raw, bounce_domain=DOMAIN) == []


def test_a_return_path_names_a_delivery_only_at_its_domain() -> None:
    path = verp.return_path(DELIVERY, DOMAIN)
    assert path == f"bounce+{DELIVERY}@{DOMAIN}"
    assert verp.delivery_of(f"<{path.upper()}>", DOMAIN) == DELIVERY
    assert verp.delivery_of(path, "other.test") is None
    assert verp.delivery_of(f"bounce+a/b@{DOMAIN}", DOMAIN) is None
    assert verp.delivery_of(f"postmaster@{DOMAIN}", DOMAIN) is None


def test_an_unreadable_or_hostile_report_is_no_receipt_rather_than_an_error() -> None:
    raw = dsn("failed", "5.1.1", "550 5.1.1 utilisateur inconnu")
    eight_bit = raw.replace(b"inconnu", "inconnu \xe9t\xe9".encode("latin-1") + b"\x00")
    [receipt] = receipts_in(eight_bit, bounce_domain=DOMAIN)
    assert receipt.kind == ReceiptKind.BOUNCED
    assert receipt.detail is not None
    assert "\x00" not in receipt.detail
    assert receipt.detail.startswith("smtp; 550 5.1.1 utilisateur inconnu")
    nested = b"Content-Type: multipart/report; report-type=delivery-status; boundary=a\r\n\r\n"
    nested += b"".join(
        f"--{'a' * i}\r\nContent-Type: multipart/mixed; boundary={'a' * (i + 1)}\r\n\r\n".encode()
        for i in range(1, 3000)
    )
    assert receipts_in(nested, bounce_domain=DOMAIN) == []
    assert receipts_in(b"\xff\xfe\x00garbage", bounce_domain=DOMAIN) == []


def test_one_report_is_one_receipt_however_many_recipients_it_lists() -> None:
    raw = dsn("failed", "5.1.1", "550 5.1.1 unknown")
    block = b"Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    many = raw.replace(b"Final-Recipient:", block * 500 + b"Final-Recipient:", 1)
    assert len(receipts_in(many, bounce_domain=DOMAIN)) == 1
