"""Properties of the URL-ish parsers that are not outbound-URL checks: the SMTP relay URL,
Apprise URL redaction, Web Push subscriptions and page cursors. Each either returns its
result or raises its own documented error, and round-trips what it should."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.api.errors import FieldError
from herald.api.pages import decode_cursor, encode_cursor
from herald.channels.apprise import redact
from herald.channels.smtp import parse_smtp_url
from herald.channels.webpush import parse_subscription
from herald.errors import ConfigError, PermanentDeliveryError

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

url_soup = st.lists(
    st.sampled_from(
        ["smtp", "smtps", "json", "https", "://", ":", "@", "/", "?", "&", "=", "#", "[", "]",
         "::1", "h", "127.0.0.1", "25", "99999", "-1", "starttls", "verify", "auto", "off",
         "%", "%40", "%zz", " ", "\n", "\x00", "é", "user", "pass"]
    ),
    max_size=12,
).map("".join)  # fmt: skip
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["127.0.0.1", "[::1]", "[2001:db8::25]"]
)


# -- the SMTP relay URL ----------------------------------------------------------------------


@PROPERTY
@given(st.text(max_size=40) | url_soup)
def test_any_smtp_url_parses_or_is_a_config_error(url: str) -> None:
    try:
        target = parse_smtp_url(url)
    except ConfigError as error:
        message = str(error)
    else:
        assert target.host
        assert 0 < target.port <= 65535
        return
    assert "HERALD_SMTP_URL" in message


@PROPERTY
@given(
    scheme=st.sampled_from(["smtp", "smtps"]),
    host=hostnames,
    port=st.none() | st.integers(1, 65535),
    username=st.none() | st.text(min_size=1, max_size=10),
    password=st.text(min_size=1, max_size=10),
    starttls=st.none() | st.sampled_from(["auto", "require", "off"]),
    verify=st.none() | st.sampled_from(["true", "false", "0", "no", "yes", "FALSE"]),
)
def test_smtp_urls_round_trip_and_never_show_the_password(
    scheme: str,
    host: str,
    port: int | None,
    username: str | None,
    password: str,
    starttls: str | None,
    verify: str | None,
) -> None:
    userinfo = "" if username is None else f"{quote(username, safe='')}:{quote(password, safe='')}@"
    options = [f"{k}={v}" for k, v in (("starttls", starttls), ("verify", verify)) if v]
    query = f"?{'&'.join(options)}" if options else ""
    url = f"{scheme}://{userinfo}{host}{'' if port is None else f':{port}'}{query}"

    target = parse_smtp_url(url)

    assert target.host == host.strip("[]")
    assert target.port == port or (
        port is None and target.port == (465 if scheme == "smtps" else 25)
    )
    assert (target.username, target.password) == (
        (None, None) if username is None else (username, password)
    )
    assert target.use_tls is (scheme == "smtps")
    if scheme == "smtps":
        assert target.start_tls is False
    else:
        assert target.start_tls is {"auto": None, "require": True, "off": False}[starttls or "auto"]
    assert target.validate_certs is ((verify or "true").lower() not in ("false", "0", "no"))
    assert str(target) == f"{scheme}://{target.host}:{target.port}"  # never the password


# -- Apprise URLs: what may be shown -----------------------------------------------------------

SECRET = "Zq7SECRETx"  # a marker no scheme or host below contains


@PROPERTY
@given(st.text(max_size=40) | url_soup)
def test_redacting_any_text_gives_text(url: str) -> None:
    shown = redact(url)
    assert isinstance(shown, str)
    assert shown.endswith("://") or shown.startswith(("an ", "a ")) or "://" in shown


@PROPERTY
@given(
    scheme=st.sampled_from(["json", "https", "slack", "tgram", "discord", "mailto", "JSON"]),
    host=hostnames,
    where=st.sampled_from(["user", "password", "path", "query", "fragment", "host-of-token"]),
)
def test_redaction_never_shows_credentials(scheme: str, host: str, where: str) -> None:
    url = {
        "user": f"{scheme}://{SECRET}@{host}/x",
        "password": f"{scheme}://user:{SECRET}@{host}/x",
        "path": f"{scheme}://{host}/{SECRET}/{SECRET}",
        "query": f"{scheme}://{host}/?token={SECRET}",
        "fragment": f"{scheme}://{host}/#{SECRET}",
        "host-of-token": f"{scheme}://{SECRET}/{SECRET}",  # Telegram-style: the token is the host
    }[where]
    shown = redact(url)
    if where == "host-of-token" and scheme.lower() in ("json", "https"):
        return  # for these schemes the host part is a host, and shown as one
    assert SECRET.lower() not in shown.lower()


# -- Web Push subscriptions ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["endpoint", "keys", "p256dh", "auth", "x"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)


ENDPOINTS = ["https://push.example/1", "http://127.0.0.1:9/x", "https://[::1", "ftp://x/"]


@PROPERTY
@given(
    st.text(max_size=60)
    | json_values.map(json.dumps)
    | st.fixed_dictionaries(
        {
            "endpoint": st.text(max_size=30) | st.sampled_from(ENDPOINTS),
            "keys": st.fixed_dictionaries(
                {},
                optional={
                    "p256dh": st.text(max_size=90) | st.binary(max_size=70).map(lambda b: b.hex()),
                    "auth": st.text(alphabet="AZaz09-_=+/ é", max_size=30),
                },
            ),
        }
    ).map(json.dumps)
)  # fmt: skip
def test_any_recipient_is_a_subscription_or_a_permanent_error(recipient: str) -> None:
    try:
        subscription = parse_subscription(recipient)
    except PermanentDeliveryError:
        return
    assert len(subscription.p256dh) == 65
    assert len(subscription.auth) == 16


_PUBLIC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
)


def _encode(raw: bytes, style: str) -> str:
    if style == "standard":
        return base64.b64encode(raw).decode()
    encoded = base64.urlsafe_b64encode(raw).decode()
    return encoded.rstrip("=") if style == "unpadded" else encoded


@PROPERTY
@given(
    auth=st.binary(min_size=16, max_size=16),
    styles=st.tuples(*[st.sampled_from(["unpadded", "padded", "standard"])] * 2),
    endpoint=st.sampled_from(["https://push.example/a/b?c=1", "http://localhost:8080/p"]),
)
def test_a_subscription_round_trips_in_any_base64_dialect(
    auth: bytes, styles: tuple[str, str], endpoint: str
) -> None:
    keys = {"p256dh": _encode(_PUBLIC_KEY, styles[0]), "auth": _encode(auth, styles[1])}
    subscription = parse_subscription(json.dumps({"endpoint": endpoint, "keys": keys}))
    assert (subscription.p256dh, subscription.auth) == (_PUBLIC_KEY, auth)
    assert str(subscription.endpoint) == endpoint


def test_a_deeply_nested_recipient_is_a_permanent_error() -> None:
    # Herald writes subscriptions itself, but a job on the bus may come from anywhere.
    for recipient in ("[" * 100_000, '{"keys": ' * 50_000):
        try:
            parse_subscription(recipient)
        except PermanentDeliveryError:
            continue
        raise AssertionError("accepted")


# -- page cursors ----------------------------------------------------------------------------


@PROPERTY
@given(st.text(min_size=36, max_size=36))
def test_cursors_round_trip(last_id: str) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


@PROPERTY
@given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: encode_cursor(b.hex())))
def test_any_cursor_is_an_id_or_a_field_error(cursor: str) -> None:
    try:
        value = decode_cursor(cursor)
    except FieldError as error:
        field = error.field
    else:
        assert len(value) == 36
        return
    assert field == "cursor"
