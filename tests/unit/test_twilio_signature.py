"""Twilio's signature against the vectors Twilio's own libraries test with."""

from __future__ import annotations

from herald.channels.twilio_signature import signature, valid

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]


def test_twilios_documented_example() -> None:
    assert signature(TOKEN, URL, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature(TOKEN, URL, reversed(PARAMS)) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_a_repeated_parameter_counts_each_distinct_value_once_in_order() -> None:
    repeated = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]
    assert signature(TOKEN, URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_any_change_breaks_it() -> None:
    good = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert valid(TOKEN, URL, PARAMS, good)
    assert not valid("54321", URL, PARAMS, good)
    assert not valid(TOKEN, URL + "&extra=1", PARAMS, good)
    assert not valid(TOKEN, URL, [*PARAMS[:2], ("Digits", "9999"), *PARAMS[3:]], good)
    assert not valid(TOKEN, URL, PARAMS, "")
    assert not valid(TOKEN, URL, PARAMS, "invalid 王")
