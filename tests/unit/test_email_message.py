"""The email builder refuses every header value that could add headers or recipients."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import pytest

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
    parsed = message_from_bytes(mail.as_bytes(), policy=policy.default)
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
