"""SendGrid as an email provider (a fake speaking its v3 Mail Send API over loopback HTTP), and
its Signed Event Webhook as receipts: delivered, bounced (suppressed), a spam report
(suppressed), an unsubscribe; forged or replayed posts change nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from herald.channels.base import OutboundMessage
from herald.channels.sendgrid import SendGridConfig, SendGridProvider
from herald.errors import PermanentDeliveryError, TransientDeliveryError
from tests.fakes.http_server import running
from tests.fakes.sendgrid import EventPost, FakeSendGrid, SentMail
from tests.pipeline_harness import Pipeline, PipelineFactory

KEY = "SG.test-key.0123456789"
EVENTS = "/api/v1/receipts/sendgrid/sendgrid-main"


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with running(FakeSendGrid(KEY)) as server:
        yield server


def config(server: FakeSendGrid, **changes: Any) -> dict[str, Any]:
    return {
        "type": "sendgrid",
        "base_url": server.url,
        "api_key": KEY,
        "webhook_verification_key": server.verification_key,
        "timeout_seconds": 2.0,
        **changes,
    }


def only_sendgrid(server: FakeSendGrid) -> dict[str, Any]:
    """Pipeline settings: email goes through SendGrid alone."""
    return {
        "providers": {"sendgrid-main": config(server)},
        "channel_providers": {"email": ["sendgrid-main"]},
    }


@pytest.fixture
async def provider(sendgrid: FakeSendGrid) -> AsyncIterator[SendGridProvider]:
    p = SendGridProvider(
        "sendgrid-main",
        SendGridConfig.model_validate(config(sendgrid)),
        sender="Herald <herald@example.com>",
    )
    await p.start()
    yield p
    await p.close()


def email(**changes: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "channel": "email",
        "recipient": "ann@example.org",
        "subject": "Your code",
        "body": "123456",
        "html": "<p>123456</p>",
        "attempt": 1,
        "headers": {"List-Unsubscribe": "<https://h.example/u>"},
        **changes,
    }
    return OutboundMessage(**fields)


async def test_a_send_is_the_mail_send_request_sendgrid_expects(
    sendgrid: FakeSendGrid, provider: SendGridProvider
) -> None:
    result = await provider.send(email())
    [mail] = sendgrid.mails
    assert result.provider_message_id == mail.message_id
    assert (mail.to, mail.sender, mail.subject) == (
        "ann@example.org",
        "herald@example.com",
        "Your code",
    )
    assert [c["type"] for c in mail.content] == ["text/plain", "text/html"]
    assert mail.custom_args == {"herald_delivery_id": "dlv-1", "herald_notification_id": "ntf-1"}
    assert mail.headers["List-Unsubscribe"] == "<https://h.example/u>"
    assert mail.headers["X-Herald-Delivery-Id"] == "dlv-1"


async def test_refusals_and_trouble_are_typed(
    sendgrid: FakeSendGrid, provider: SendGridProvider
) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"personalizations\.0\.to: Does not contain"):
        await provider.send(email(recipient="not-an-address"))
    with pytest.raises(PermanentDeliveryError, match="line break"):
        await provider.send(email(subject="Hi\r\nBcc: x@evil.example"))
    bad_key = SendGridProvider(
        "sg-bad",
        SendGridConfig.model_validate(config(sendgrid, api_key="SG.wrong")),
        sender="h@x.io",
    )
    await bad_key.start()
    with pytest.raises(TransientDeliveryError, match="credentials rejected"):
        await bad_key.send(email())
    await bad_key.close()
    assert sendgrid.mails == []


async def post(p: Pipeline, events: EventPost) -> Any:
    return await p.http.post(EVENTS, content=events.body, headers=events.headers)


async def sent(p: Pipeline, sendgrid: FakeSendGrid, to: str) -> tuple[str, SentMail]:
    accepted = await p.send(recipient=to)
    body = await p.wait_until_done(accepted["id"])
    assert body["status"] == "SENT", body
    assert body["deliveries"][0]["provider"] == "sendgrid-main"
    return accepted["id"], [m for m in sendgrid.mails if m.to == to][-1]


async def test_events_settle_deliveries_and_suppress(
    start_pipeline: PipelineFactory, sendgrid: FakeSendGrid
) -> None:
    async with start_pipeline(**only_sendgrid(sendgrid)) as p:
        fine_id, fine = await sent(p, sendgrid, "fine@example.org")
        gone_id, gone = await sent(p, sendgrid, "gone@example.org")
        spam_id, spam = await sent(p, sendgrid, "spam@example.org")
        delivered = sendgrid.events(fine, "processed", "delivered")
        answers = [
            await post(p, delivered),
            await post(p, delivered),  # SendGrid posting the same events again
            await post(p, sendgrid.events(gone, "bounce", status="5.1.1", reason="550 unknown")),
            await post(p, sendgrid.events(spam, "delivered", "spamreport")),
            await post(p, sendgrid.events(fine, "unsubscribe")),
        ]
        statuses = {
            i: (await p.get(i))["deliveries"][0]["status"] for i in (fine_id, gone_id, spam_id)
        }
        reasons = {
            to: (await p.http.get(f"/api/v1/suppressions/email/{to}")).json().get("reason")
            for to in ("fine@example.org", "gone@example.org", "spam@example.org")
        }
        again = await p.send(recipient="gone@example.org")
        skipped = await p.wait_until_done(again["id"])

    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json()["outcomes"] for a in answers] == [
        ["recorded", "applied"],
        ["duplicate", "duplicate"],
        ["applied"],
        ["applied", "applied"],
        ["applied"],
    ]
    assert statuses == {fine_id: "DELIVERED", gone_id: "BOUNCED", spam_id: "COMPLAINED"}
    assert reasons == {
        "fine@example.org": "unsubscribe",
        "gone@example.org": "hard_bounce",
        "spam@example.org": "complaint",
    }
    assert skipped["status"] == "SKIPPED"
    assert len([m for m in sendgrid.mails if m.to == "gone@example.org"]) == 1


async def test_a_forged_or_foreign_post_changes_nothing(
    start_pipeline: PipelineFactory, sendgrid: FakeSendGrid
) -> None:
    async with start_pipeline(**only_sendgrid(sendgrid)) as p:
        notification_id, mail = await sent(p, sendgrid, "ann@example.org")
        real = sendgrid.events(mail, "bounce", status="5.1.1")
        impostor = FakeSendGrid(KEY)  # another key pair
        forged = impostor.events(mail, "bounce", status="5.1.1")
        tampered = EventPost(real.body.replace(b"bounce", b"delivered"), real.headers)
        restamped = EventPost(
            real.body, {**real.headers, "X-Twilio-Email-Event-Webhook-Timestamp": "1"}
        )
        unsigned = EventPost(real.body, {"Content-Type": "application/json"})
        refused = [await post(p, e) for e in (forged, tampered, restamped, unsigned)]
        foreign = sendgrid.sign(json.dumps([{"event": "bounce", "email": "x@y.z"}]).encode(), "7")
        ignored = await post(p, foreign)
        body = await p.get(notification_id)

    assert [r.status_code for r in refused] == [403] * 4
    assert ignored.json() == {"outcomes": []}
    assert body["deliveries"][0]["status"] == "SENT"


async def test_opens_and_clicks_past_the_cap_never_crowd_out_a_bounce(
    start_pipeline: PipelineFactory, sendgrid: FakeSendGrid
) -> None:
    async with start_pipeline(**only_sendgrid(sendgrid)) as p:
        notification_id, mail = await sent(p, sendgrid, "busy@example.org")
        opens = await post(p, sendgrid.events(mail, *["open"] * 60))
        bounce = await post(p, sendgrid.events(mail, "bounce", status="5.1.1"))
        body = await p.get(notification_id)

    assert opens.json()["outcomes"] == ["recorded"] * 50 + ["dropped"] * 10
    assert bounce.json()["outcomes"] == ["applied"]
    assert body["deliveries"][0]["status"] == "BOUNCED"
