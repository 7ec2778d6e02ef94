"""Which destination a delivery's circuit belongs to."""

from __future__ import annotations

import json

import pytest

from herald.domain.destinations import circuit_key, destination


@pytest.mark.parametrize(
    ("channel", "recipient", "expected"),
    [
        ("email", "Ana@Example.COM", "example.com"),
        ("webhook", "https://Hooks.Example.com:8443/a?b=1", "https://hooks.example.com"),
        ("apprise", "json://hooks.example.com/path", "json://hooks.example.com"),
        ("sms", "+14155550100", None),
        ("push", "token", None),
        ("inapp", "user-1", None),
        ("webhook", "not a url", None),
    ],
)
def test_a_destination_is_a_host_or_a_mail_domain(
    channel: str, recipient: str, expected: str | None
) -> None:
    assert destination(channel, recipient) == expected


def test_a_web_push_destination_is_its_push_service() -> None:
    subscription = json.dumps({"endpoint": "https://push.example.net/v2/abc", "keys": {}})
    assert destination("webpush", subscription) == "https://push.example.net"


def test_an_apprise_token_in_the_host_is_hashed_not_kept() -> None:
    found = destination("apprise", "tgram://123456:secret-token/chat")
    assert found is not None
    assert found.startswith("tgram://#")
    assert "secret" not in found
    assert "123456" not in found


def test_circuits_are_per_tenant() -> None:
    assert circuit_key("acme", "example.com") != circuit_key("globex", "example.com")
