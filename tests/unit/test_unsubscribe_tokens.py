"""Unsubscribe tokens: signed over tenant, user, category, expiry and the user's own secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

from herald.api.schemas import NAME_PATTERN
from herald.channels.base import OutboundMessage
from herald.channels.email_message import build_email
from herald.domain import unsubscribe
from herald.domain.unsubscribe import Link

KEY = b"k" * 32
LINK = Link("acme", "u1", "news", 2_000_000_000)


def test_a_signed_token_verifies_and_reads_back() -> None:
    token = unsubscribe.sign(KEY, LINK, "secret")
    assert unsubscribe.read(token) == LINK
    assert unsubscribe.verify(KEY, token, "secret")
    assert len(token) < 200


def test_another_key_user_secret_or_any_changed_field_fails() -> None:
    token = unsubscribe.sign(KEY, LINK, "secret")
    assert not unsubscribe.verify(b"x" * 32, token, "secret")
    assert not unsubscribe.verify(KEY, token, "another user's secret")
    for other in (
        Link("globex", "u1", "news", LINK.expires),
        Link("acme", "u2", "news", LINK.expires),
        Link("acme", "u1", "billing", LINK.expires),
        Link("acme", "u1", "news", LINK.expires + 1),
    ):
        body = unsubscribe.sign(KEY, other, "secret").partition(".")[0]
        spliced = body + "." + token.partition(".")[2]
        assert not unsubscribe.verify(KEY, spliced, "secret")


def test_malformed_tokens_read_as_nothing() -> None:
    for token in ("", "x", "x.y", "€.y", "W10.x", "WzEsMiwzLDRd.x", "." * 2000):
        assert unsubscribe.read(token) is None
        assert not unsubscribe.verify(KEY, token, "secret")


def test_only_category_names_the_api_takes_get_links() -> None:
    assert unsubscribe.CATEGORY_PATTERN == NAME_PATTERN
    assert unsubscribe.valid_category("orders.v2:eu-1")
    for name in ("", "a b", "x\r\ny", "<script>", "é", "x" * 65, "-x"):
        assert not unsubscribe.valid_category(name)
        token = unsubscribe.sign(KEY, Link("acme", "u1", name, LINK.expires), "secret")
        assert unsubscribe.read(token) is None


def test_links_expire_link_ttl_after_sending() -> None:
    sent = datetime(2030, 1, 1, tzinfo=UTC)
    link = Link("acme", "u1", "news", unsubscribe.expiry(sent))
    assert not link.expired(sent + unsubscribe.LINK_TTL - timedelta(seconds=1))
    assert link.expired(sent + unsubscribe.LINK_TTL)
    assert timedelta(days=60) == unsubscribe.LINK_TTL


def test_the_longest_link_goes_on_one_list_unsubscribe_line_as_smtp_sends_it() -> None:
    """Folded at 78 columns, the link became RFC 2047 encoded-words no client decodes there."""
    longest = Link("t" * 63, "~" * 255, "c" * 64, 2**40)
    token = unsubscribe.sign(KEY, longest, "secret")
    assert unsubscribe.read(token) == longest
    assert len(token) < 600
    link = f"<https://notifications.example.com/api/v1/unsubscribe?token={token}>"
    headers = {"List-Unsubscribe": link, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    mail = build_email(
        OutboundMessage(
            delivery_id="d-1",
            notification_id="n-1",
            channel="email",
            recipient="a@example.com",
            subject="News",
            body="Hello",
            attempt=1,
            headers=headers,
        ),
        "Herald <herald@example.com>",
    )
    raw = mail.data  # what is sent
    assert f"\r\nList-Unsubscribe: {link}\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert b"=?" not in raw
    assert message_from_bytes(raw, policy=policy.default)["List-Unsubscribe"] == link
