"""The email builder refuses every header value that could add headers or recipients."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.channels.base import OutboundMessage
from herald.channels.email_message import build_email
from herald.channels.smtp import SmtpProvider, parse_smtp_url
from herald.domain.headers import LINE_BREAKS, is_field_name, is_single_line
from herald.errors import ConfigError, PermanentDeliveryError

SENDER = "Herald <herald@example.com>"
BREAKS = sorted(LINE_BREAKS | {"\x00"})


def outbound(**changes: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": "d-1",
        "notification_id": "n-1",
        "channel": "email",
        "recipient": "a@example.com",
        "subject": "Welcome",
        "body": "Hello",
        "attempt": 1,
    }
    values.update(changes)
    return OutboundMessage(**values)


def test_line_breaks_are_what_splitlines_splits_on() -> None:
    for code in range(0x3000):
        char = chr(code)
        assert (char in LINE_BREAKS) == (len(f"a{char}b".splitlines()) > 1), hex(code)
    assert not is_single_line("a\x00b")
    assert is_single_line("tab\tand unicode: Olá ✓")


def test_a_clean_message_has_exactly_the_expected_headers() -> None:
    mail = build_email(
        outbound(headers={"List-Unsubscribe": "<https://x.test/u?a=1>"}, html="<p>Hi</p>"), SENDER
    )
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["To"] == "a@example.com"
    assert parsed["Subject"] == "Welcome"
    assert parsed["List-Unsubscribe"] == "<https://x.test/u?a=1>"
    assert "Bcc" not in parsed
    assert "Cc" not in parsed


@pytest.mark.parametrize("char", BREAKS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(
    "field", ["subject", "recipient", "notification_id", "delivery_id", "header"]
)
def test_a_line_break_or_nul_in_any_header_value_is_permanent(field: str, char: str) -> None:
    evil = f"x@example.com{char}Bcc: victim@example.com"
    changes: dict[str, Any] = (
        {"headers": {"List-Unsubscribe": evil}} if field == "header" else {field: evil}
    )
    with pytest.raises(PermanentDeliveryError, match="line break or NUL"):
        build_email(outbound(**changes), SENDER)


@pytest.mark.parametrize("char", BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_line_break_in_the_sender_is_permanent(char: str) -> None:
    with pytest.raises(PermanentDeliveryError):
        build_email(outbound(), f"Herald{char}Bcc: victim@example.com <h@example.com>")


@pytest.mark.parametrize(
    "name",
    ["X-Evil\r\nBcc", "X-Evil: Bcc", "X Evil", "", "X-Évil", "X-Evil\x00"],
)
def test_a_malformed_header_name_is_permanent(name: str) -> None:
    assert not is_field_name(name)
    with pytest.raises(PermanentDeliveryError, match="header name"):
        build_email(outbound(headers={name: "v"}), SENDER)


@pytest.mark.parametrize(
    "name", ["Bcc", "cc", "To", "From", "Reply-To", "Subject", "Resent-To", "Content-Type"]
)
def test_extra_headers_may_not_address_the_mail_or_replace_ours(name: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="may not be set"):
        build_email(outbound(headers={name: "victim@example.com"}), SENDER)


def test_a_display_name_smuggled_into_the_recipient_is_refused() -> None:
    with pytest.raises(PermanentDeliveryError, match="line break"):
        build_email(outbound(recipient='"Name\r\n" <a@example.com>'), SENDER)
    with pytest.raises(ValueError, match="Invalid addr_spec"):  # an address, not a display name
        build_email(outbound(recipient='"Name" <a@example.com>'), SENDER)


async def test_the_smtp_provider_refuses_before_connecting() -> None:
    # Port 9 (discard) on loopback: nothing listens; refusing must not even try to connect.
    provider = SmtpProvider(parse_smtp_url("smtp://127.0.0.1:9"), sender=SENDER, pool_size=1)
    try:
        with pytest.raises(PermanentDeliveryError):
            await provider.send(outbound(subject="Hi\r\nBcc: victim@example.com"))
    finally:
        await provider.close()


def test_a_multi_line_sender_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError):
        SmtpProvider(parse_smtp_url("smtp://127.0.0.1:9"), sender="H\r\nBcc: v@example.com <h@x>")


# -- the bytes, as a mail reader reads them ---------------------------------------------------

# (a reader drops the spaces that begin or end a header's value)
single_line = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters=sorted(BREAKS)), max_size=300
).map(lambda value: value.strip(" \t"))
any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=1500)


def _text(text: str) -> str:
    """A text part as a reader compares it: CR, LF and CRLF end a line, trailing ends aside."""
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


@settings(max_examples=150, deadline=None)
@given(subject=single_line, body=any_text, html=st.none() | any_text, tag=single_line)
def test_what_is_written_reads_back_as_it_was_given(
    subject: str, body: str, html: str | None, tag: str
) -> None:
    mail = build_email(
        outbound(subject=subject, body=body, html=html, headers={"X-Tag": tag}), SENDER
    )
    assert mail.data.isascii()
    assert max(len(line) for line in mail.data.split(b"\r\n")) <= 998
    assert b"\n" not in mail.data.replace(b"\r\n", b"")  # no bare line feed
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert not parsed.defects
    assert parsed["Subject"] == subject
    assert parsed["X-Tag"] == tag
    assert parsed["Message-ID"] == mail.message_id == "<d-1@example.com>"
    plain = parsed.get_body(("plain",))
    assert plain is not None
    assert _text(plain.get_content()) == _text(body)
    if html:
        part = parsed.get_body(("html",))
        assert part is not None
        assert _text(part.get_content()) == _text(html)


def test_long_plain_values_are_folded_at_spaces_and_long_links_between_list_items() -> None:
    subject = " ".join(["word"] * 60)
    links = ", ".join(f"<https://x.test/{'u' * 400}/{i}>" for i in range(4))
    mail = build_email(outbound(subject=subject, headers={"List-Unsubscribe": links}), SENDER)
    head = mail.data.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert b"=?" not in head  # nothing became an encoded-word
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Subject"] == subject
    assert parsed["List-Unsubscribe"] == links


def test_a_non_ascii_recipient_is_sent_as_utf8_and_others_are_not() -> None:
    assert not build_email(outbound(), SENDER).utf8
    mail = build_email(outbound(recipient="josé@example.com"), SENDER)
    assert mail.utf8
    assert mail.recipient == "josé@example.com"
    assert mail.sender == "herald@example.com"
    assert "To: josé@example.com\r\n".encode() in mail.data
