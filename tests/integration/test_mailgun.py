"""Mailgun as an email provider (a fake speaking its Messages API over loopback HTTP), and its
signed webhooks as receipts: delivered, a permanent failure for a bad address (suppressed), a
temporary one (recorded), a complaint (suppressed); a post not signed with the webhook signing
key, or sent again, changes nothing more."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from herald.channels.mailgun import MailgunConfig, MailgunProvider
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from tests.fakes.http_server import running
from tests.fakes.mailgun import FakeMailgun, SentMail
from tests.integration.test_sendgrid import email
from tests.pipeline_harness import Pipeline, PipelineFactory

DOMAIN = "mg.example.com"
KEY = "key-0123456789abcdef"
SIGNING = "signing-key-fedcba9876"
HOOK = "/api/v1/receipts/mailgun/mailgun-main"


@pytest.fixture
def mailgun() -> Iterator[FakeMailgun]:
    with running(FakeMailgun(DOMAIN, KEY, SIGNING)) as server:
        yield server


def config(server: FakeMailgun, **changes: Any) -> dict[str, Any]:
    return {
        "type": "mailgun",
        "base_url": server.url,
        "domain": DOMAIN,
        "api_key": KEY,
        "webhook_signing_key": SIGNING,
        "timeout_seconds": 2.0,
        **changes,
    }


@pytest.fixture
async def provider(mailgun: FakeMailgun) -> AsyncIterator[MailgunProvider]:
    p = MailgunProvider(
        "mailgun-main", MailgunConfig.model_validate(config(mailgun)), sender="Herald <h@x.io>"
    )
    await p.start()
    yield p
    await p.close()


async def test_a_send_is_the_messages_request_mailgun_expects(
    mailgun: FakeMailgun, provider: MailgunProvider
) -> None:
    result = await provider.send(email())
    [mail] = mailgun.mails
    assert result.provider_message_id == mail.message_id
    assert mail.form["to"] == "ann@example.org"
    assert mail.form["from"] == "Herald <h@x.io>"
    assert (mail.form["text"], mail.form["html"]) == ("123456", "<p>123456</p>")
    assert mail.variables == {"herald_delivery_id": "dlv-1"}
    assert mail.form["h:List-Unsubscribe"] == "<https://h.example/u>"


async def test_refusals_and_trouble_are_typed(
    mailgun: FakeMailgun, provider: MailgunProvider
) -> None:
    with pytest.raises(PermanentDeliveryError, match="not a valid address"):
        await provider.send(email(recipient="nobody"))
    with pytest.raises(PermanentDeliveryError, match="line break"):
        await provider.send(email(subject="Hi\r\nBcc: x@evil.example"))
    wrong = MailgunConfig.model_validate(config(mailgun, api_key="key-wrong"))
    bad_key = MailgunProvider("mg-bad", wrong, sender="h@x.io")
    await bad_key.start()
    with pytest.raises(TransientDeliveryError, match="credentials rejected"):
        await bad_key.send(email())
    await bad_key.close()
    assert mailgun.mails == []


def only_mailgun(server: FakeMailgun) -> dict[str, Any]:
    return {
        "providers": {"mailgun-main": config(server)},
        "channel_providers": {"email": ["mailgun-main"]},
    }


async def sent(p: Pipeline, mailgun: FakeMailgun, to: str) -> tuple[str, SentMail]:
    accepted = await p.send(recipient=to)
    body = await p.wait_until_done(accepted["id"])
    assert body["status"] == "SENT", body
    return accepted["id"], [m for m in mailgun.mails if m.form["to"] == to][-1]


async def test_webhooks_settle_deliveries_and_suppress(
    start_pipeline: PipelineFactory, mailgun: FakeMailgun
) -> None:
    async with start_pipeline(**only_mailgun(mailgun)) as p:
        fine_id, fine = await sent(p, mailgun, "fine@example.org")
        gone_id, gone = await sent(p, mailgun, "gone@example.org")
        full_id, full = await sent(p, mailgun, "full@example.org")
        spam_id, spam = await sent(p, mailgun, "spam@example.org")
        delivered = mailgun.event(fine, "delivered", **{"delivery-status": {"code": 250}})
        bounce = {"severity": "permanent", "reason": "bounce"}
        posts = [
            delivered,
            delivered,
            mailgun.event(gone, "failed", **bounce, **{"delivery-status": {"code": 550}}),
            mailgun.event(full, "failed", severity="temporary", reason="generic"),
            mailgun.event(spam, "complained"),
        ]
        answers = [await p.http.post(HOOK, content=b) for b in posts]
        statuses = {
            i: (await p.get(i))["deliveries"][0]["status"]
            for i in (fine_id, gone_id, full_id, spam_id)
        }
        reasons = {
            to: (await p.http.get(f"/api/v1/suppressions/email/{to}")).json().get("reason")
            for to in ("gone@example.org", "full@example.org", "spam@example.org")
        }

    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["outcomes"] for a in answers] == [
        ["applied"],
        ["duplicate"],
        ["applied"],
        ["recorded"],
        ["applied"],
    ]
    assert statuses == {
        fine_id: "DELIVERED",
        gone_id: "BOUNCED",
        full_id: "SENT",
        spam_id: "COMPLAINED",
    }
    assert reasons == {
        "gone@example.org": "hard_bounce",
        "full@example.org": None,
        "spam@example.org": "complaint",
    }


async def test_a_post_not_signed_with_the_signing_key_changes_nothing(
    start_pipeline: PipelineFactory, mailgun: FakeMailgun
) -> None:
    async with start_pipeline(**only_mailgun(mailgun)) as p:
        notification_id, mail = await sent(p, mailgun, "ann@example.org")
        forged = mailgun.event(mail, "failed", key="not-the-key", severity="permanent")
        real = json.loads(mailgun.event(mail, "failed", severity="permanent", reason="bounce"))
        real["signature"]["timestamp"] = "1"  # the signature no longer covers it
        stale = mailgun.event(mail, "failed", at=time.time() - 13 * 3600, severity="permanent")
        answers = [
            await p.http.post(HOOK, content=forged),
            await p.http.post(HOOK, content=json.dumps(real).encode()),
            await p.http.post(HOOK, content=stale),
            await p.http.post(HOOK, content=b"not json"),
            await p.http.post(HOOK, content=b"[" * 5000, headers={"content-type": "text/plain"}),
            await p.http.post(HOOK, content=b"{}"),
        ]
        hostile = await p.http.post(
            HOOK,
            content=b'{"signature": {"timestamp": "\\ud800", "token": "x", "signature": "y"}}',
            headers={"content-type": "text/plain"},
        )
        # A signed timestamp and token, taken once, cannot carry another event.
        delivered = mailgun.event(mail, "delivered", token="t" * 50)
        reused = mailgun.event(mail, "complained", token="t" * 50)
        first = await p.http.post(HOOK, content=delivered)
        second = await p.http.post(HOOK, content=reused)
        body = await p.get(notification_id)

    assert [a.status_code for a in answers] == [403] * 6
    assert hostile.status_code == 422
    assert hostile.json()["errors"][0]["field"] == "signature.timestamp"
    assert (first.json(), second.json()) == ({"outcomes": ["applied"]}, {"outcomes": ["duplicate"]})
    assert body["deliveries"][0]["status"] == "DELIVERED"
