"""What no provider could ever deliver is refused at the API with 422 naming the field, instead
of being accepted and dead-lettered later: email addresses with non-ASCII before the @ (unless
the relay takes SMTPUTF8), Web Push endpoints that are not https, push tokens with spaces or
NUL, and subjects or messages of nothing but whitespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald.api.app import create_app
from herald.channels.base import OutboundMessage
from herald.channels.smtp import SmtpProvider, parse_smtp_url
from herald.runtime import Runtime
from tests.conftest import settings_for
from tests.smtp_sink import SmtpSink

URL = "/api/v1/notifications"
SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}
KEYS = {"p256dh": "BPcMbnWQL5GOYX", "auth": "g2Bs9bvBQ"}
# Resolvable and allowed in the tests (loopback), so only its scheme is wrong.
HTTP_PUSH = [{"endpoint": "http://127.0.0.2:9/wpush/v2/abc", "keys": KEYS}]


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipient": "josé@example.com"}, "recipient"),
        ({"recipient": "用户@例子.广告"}, "recipient"),
        ({"contacts": {"email": "ñandú@example.com"}}, "contacts.email"),
        (
            {"contacts": {"web_push": HTTP_PUSH}, "channels": ["webpush"]},
            "contacts.web_push[0].endpoint",
        ),
        (
            {"contacts": {"push_tokens": ["abc def"]}, "channels": ["push"]},
            "contacts.push_tokens[0]",
        ),
        ({"contacts": {"push_tokens": ["   "]}, "channels": ["push"]}, "contacts.push_tokens[0]"),
        (
            {"contacts": {"push_tokens": ["ab\x00c"]}, "channels": ["push"]},
            "contacts.push_tokens[0]",
        ),
        ({"subject": "   "}, "subject"),
        ({"subject": "\t \u3000"}, "subject"),
        ({"message": " \n\t "}, "message"),
    ],
)
async def test_a_notification_no_provider_could_deliver_is_refused(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {**SEED, **change}
    assert fields(await client.post(URL, json=body)) == [field]
    batch = await client.post(f"{URL}/batch", json={"items": [SEED, body]})
    assert fields(batch) == [f"items[1].{field}"]
    assert (await client.get(URL)).json()["items"] == []  # nothing was stored


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"email": "josé@example.com"}, "email"),
        ({"web_push": HTTP_PUSH}, "web_push[0].endpoint"),
        ({"push_tokens": ["ok", "not\tok"]}, "push_tokens[1]"),
    ],
)
async def test_a_user_no_provider_could_reach_is_refused(
    client: httpx.AsyncClient, profile: dict[str, Any], field: str
) -> None:
    assert fields(await client.put("/api/v1/users/u1", json=profile)) == [field]
    assert (await client.get("/api/v1/users/u1")).status_code == 404


async def test_an_internationalised_domain_is_kept_in_its_idna_form(
    client: httpx.AsyncClient,
) -> None:
    """Any relay takes xn-- domains; only the local part needs SMTPUTF8."""
    response = await client.post(URL, json={**SEED, "recipient": "Ana@Bücher.example"})
    assert response.status_code == 202, response.text
    assert response.json()["recipient"] == "Ana@xn--bcher-kva.example"
    user = await client.put("/api/v1/users/u1", json={"email": "ana@bücher.example"})
    assert user.json()["email"] == "ana@xn--bcher-kva.example"


@pytest.fixture
async def smtputf8_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(settings_for(database_url, smtp_utf8=True))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http
    await runtime.close()


async def test_with_an_smtputf8_relay_non_ascii_local_parts_are_accepted(
    smtputf8_client: httpx.AsyncClient,
) -> None:
    response = await smtputf8_client.post(URL, json={**SEED, "recipient": "josé@example.com"})
    assert response.status_code == 202, response.text
    assert response.json()["recipient"] == "josé@example.com"


async def test_the_smtp_provider_sends_non_ascii_local_parts_with_smtputf8(
    smtp_sink: SmtpSink,
) -> None:
    """(The test SMTP server offers SMTPUTF8, as a relay must for HERALD_SMTP_UTF8.)"""
    provider = SmtpProvider(parse_smtp_url(smtp_sink.url), sender="Herald <herald@localhost>")
    await provider.start()
    message = OutboundMessage(
        delivery_id="d-1",
        notification_id="n-1",
        channel="email",
        recipient="josé@example.com",
        subject="Olá",
        body="Olá, José",
        attempt=1,
    )
    try:
        await provider.send(message)
        [mail] = await smtp_sink.wait_for(1)
    finally:
        await provider.close()
    assert mail.rcpt_tos == ["josé@example.com"]
    assert mail.message["To"] == "josé@example.com"


async def app_client(database_url: str, **settings: object) -> tuple[Runtime, httpx.AsyncClient]:
    runtime = Runtime(settings_for(database_url, **settings))
    await runtime.start(migrate=False)
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    return runtime, httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def test_special_use_domains_are_accepted_only_where_the_setting_names_them(
    fresh_sqlite_url: str,
) -> None:
    """Staging mail to .test or .local: refused by default, accepted when named."""
    local = {"subject": "Hi", "message": "x", "contacts": {"email": "qa@printer.local"}}
    runtime, http = await app_client(fresh_sqlite_url)
    async with http:
        refused = await http.post(URL, json={**SEED, "recipient": "qa@shop.test"})
    await runtime.close()
    runtime, http = await app_client(fresh_sqlite_url, email_special_use_domains=["test", "local"])
    async with http:
        accepted = [
            await http.post(URL, json={**SEED, "recipient": "qa@shop.test"}),
            await http.post(URL, json=local),
        ]
        still_refused = await http.post(URL, json={**SEED, "recipient": "qa@host.invalid"})
    await runtime.close()

    assert fields(refused) == ["recipient"]
    assert [r.status_code for r in accepted] == [202, 202]
    assert fields(still_refused) == ["recipient"]  # only the names given


def test_only_special_use_domains_can_be_named() -> None:
    with pytest.raises(ValueError, match="not special-use domains"):
        settings_for("sqlite:///x.db", email_special_use_domains=["example.com"])
