"""Receipts in: Twilio's status callbacks, signed as Twilio signs them, move a delivery after
SENT as the state machine allows, and only so. A hard bounce suppresses the number; a forged
callback changes nothing; the same callback twice is applied once; one that comes after a
later status, or before the worker recorded the send, is recorded and never moves a delivery
backwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from herald.api.app import create_app
from herald.domain.models import DeliveryStatus
from herald.runtime import Runtime
from herald.store.tables import deliveries, delivery_receipts
from tests.conftest import settings_for
from tests.fakes.http_server import running
from tests.fakes.twilio import Callback, FakeTwilio, SentSms
from tests.integration.test_multichannel import SID, TOKEN, twilio_provider, wait_for_status
from tests.pipeline_harness import Pipeline, PipelineFactory

PUBLIC_URL = "https://herald.example.com"
TO = "+14155550123"
DONE = {"SENT", "DELIVERED", "FAILED", "PARTIALLY_SENT", "SKIPPED"}


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with running(FakeTwilio(SID, TOKEN)) as server:
        yield server


def sms_settings(twilio: FakeTwilio) -> dict[str, Any]:
    return {"providers": twilio_provider("twilio-main", twilio), "public_url": PUBLIC_URL}


async def post(http: httpx.AsyncClient, call: Callback) -> httpx.Response:
    """Post ``call`` to the application, at the path and query of the URL Twilio calls."""
    url = urlsplit(call.url)
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL
    return await http.post(f"{url.path}?{url.query}", content=call.body, headers=call.headers)


async def sent_sms(p: Pipeline, twilio: FakeTwilio, to: str = TO) -> tuple[str, SentSms]:
    """A text sent to ``to`` through the pipeline (SENT), and what Twilio got."""
    notification_id = await _send_sms(p, to)
    done = await wait_for_status(p, notification_id, DONE)
    assert done["status"] == "SENT", done
    sms = [m for m in twilio.messages if m.to == to][-1]
    return notification_id, sms


async def _send_sms(p: Pipeline, to: str) -> str:
    response = await p.http.post(
        "/api/v1/notifications",
        json={"contacts": {"phone": to}, "channels": ["sms"], "message": "Code 1"},
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


async def receipt_steps(p: Pipeline, notification_id: str) -> list[tuple[str, str, str]]:
    timeline = (await p.http.get(f"/api/v1/notifications/{notification_id}/timeline")).json()
    return [
        (s["status"], s["detail"], s.get("error") or "")
        for s in timeline["steps"]
        if s["step"] == "receipt"
    ]


async def test_a_delivered_callback_confirms_the_delivery_once(
    start_pipeline: PipelineFactory, twilio: FakeTwilio
) -> None:
    async with start_pipeline(channels=("email", "sms"), **sms_settings(twilio)) as p:
        notification_id, sms = await sent_sms(p, twilio)
        assert sms.status_callback is not None
        assert sms.status_callback.startswith(f"{PUBLIC_URL}/api/v1/receipts/twilio/twilio-main?")

        progress = await post(p.http, twilio.callback(sms, "sent"))
        delivered = await post(p.http, twilio.callback(sms, "delivered"))
        again = await post(p.http, twilio.callback(sms, "delivered"))
        body = await p.get(notification_id)
        steps = await receipt_steps(p, notification_id)

    assert [r.status_code for r in (progress, delivered, again)] == [200, 200, 200]
    assert [r.json()["outcome"] for r in (progress, delivered, again)] == [
        "recorded",
        "applied",
        "duplicate",
    ]
    assert body["status"] == "DELIVERED"
    assert [d["status"] for d in body["deliveries"]] == ["DELIVERED"]
    assert steps == [
        ("progress", "recorded", "Twilio sent"),
        ("delivered", "applied", "Twilio delivered"),
    ]


async def test_a_hard_bounce_suppresses_the_number_and_a_late_delivered_changes_nothing(
    start_pipeline: PipelineFactory, twilio: FakeTwilio
) -> None:
    async with start_pipeline(channels=("email", "sms"), **sms_settings(twilio)) as p:
        notification_id, sms = await sent_sms(p, twilio)
        bounced = await post(p.http, twilio.callback(sms, "undelivered", "30005"))
        late = await post(p.http, twilio.callback(sms, "delivered"))
        body = await p.get(notification_id)
        steps = await receipt_steps(p, notification_id)
        listed = await p.http.get(f"/api/v1/suppressions/sms/{TO}")

        next_one = await _send_sms(p, TO)
        skipped = await wait_for_status(p, next_one, DONE)

    assert bounced.json()["outcome"] == "applied"
    assert late.json()["outcome"] == "late"
    assert body["status"] == "FAILED"
    assert [d["status"] for d in body["deliveries"]] == ["BOUNCED"]
    assert steps == [
        ("bounced", "applied", "30005 Twilio undelivered"),
        ("delivered", "late", "Twilio delivered"),
    ]
    assert listed.status_code == 200
    assert listed.json()["reason"] == "hard_bounce"
    assert "30005" in listed.json()["detail"]
    assert skipped["status"] == "SKIPPED"
    assert skipped["deliveries"][0]["skip_reason"] == "suppressed"
    assert [m.to for m in twilio.messages] == [TO]  # no second text


async def test_a_forged_callback_is_refused_and_changes_nothing(
    start_pipeline: PipelineFactory, twilio: FakeTwilio
) -> None:
    async with start_pipeline(channels=("email", "sms"), **sms_settings(twilio)) as p:
        notification_id, sms = await sent_sms(p, twilio)
        real = twilio.callback(sms, "undelivered", "30005")
        other_account = FakeTwilio(twilio.account_sid, "someone-elses-token")
        forged = other_account.callback(sms, "undelivered", "30005")
        unsigned = Callback(real.url, real.form, {**real.headers, "X-Twilio-Signature": ""})
        tampered = Callback(
            real.url,
            [(k, "delivered" if k == "MessageStatus" else v) for k, v in real.form],
            real.headers,
        )
        # The same fields signed for one delivery, posted for another.
        other = real.url[:-1] + ("1" if real.url.endswith("0") else "0")
        elsewhere = Callback(other, real.form, real.headers)
        answers = [await post(p.http, call) for call in (forged, unsigned, tampered, elsewhere)]
        body = await p.get(notification_id)
        listed = await p.http.get(f"/api/v1/suppressions/sms/{TO}")
        async with p.runtime.db.read() as conn:
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(delivery_receipts))

    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    assert all("X-Twilio-Signature" in a.json()["message"] for a in answers)
    assert body["status"] == "SENT"
    assert listed.status_code == 404
    assert stored == 0


async def test_a_stop_reply_rejects_and_suppresses_as_an_unsubscribe(
    start_pipeline: PipelineFactory, twilio: FakeTwilio
) -> None:
    async with start_pipeline(channels=("email", "sms"), **sms_settings(twilio)) as p:
        notification_id, sms = await sent_sms(p, twilio)
        answer = await post(p.http, twilio.callback(sms, "failed", "21610"))
        body = await p.get(notification_id)
        listed = await p.http.get(f"/api/v1/suppressions/sms/{TO}")

    assert answer.json()["outcome"] == "applied"
    assert [d["status"] for d in body["deliveries"]] == ["REJECTED"]
    assert body["status"] == "FAILED"
    assert listed.json()["reason"] == "unsubscribe"


async def test_a_receipt_before_the_send_is_recorded_waits_and_is_applied_after(
    database_url: str,
) -> None:
    """No worker runs here: the delivery stays PENDING until the test marks it SENT, as the
    worker's record would."""
    twilio = FakeTwilio(SID, TOKEN)  # not listening: it only signs
    runtime = Runtime(settings_for(database_url, **sms_settings(twilio)))
    await runtime.start(migrate=False)
    runtime.receipts.spawn = None  # this test looks again itself (not a few times in the back)
    transport = httpx.ASGITransport(app=create_app(runtime, open_access=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        accepted = await client.post(
            "/api/v1/notifications",
            json={"contacts": {"phone": TO}, "channels": ["sms"], "message": "Hi"},
        )
        assert accepted.status_code == 202, accepted.text
        notification_id = accepted.json()["id"]
        delivery_id = accepted.json()["deliveries"][0]["id"]

        def sms_of(delivery: str, sid: str) -> SentSms:
            callback = f"{PUBLIC_URL}/api/v1/receipts/twilio/twilio-main?delivery={delivery}"
            return SentSms(sid, TO, "+15005550006", None, "Hi", delivery, callback)

        early = await post(
            client, twilio.callback(sms_of(delivery_id, "SM" + "1" * 32), "delivered")
        )
        unknown = await post(
            client, twilio.callback(sms_of("no-such-delivery", "SM" + "2" * 32), "delivered")
        )
        waited = await runtime.receipts.apply_early()  # still not sent: it waits

        async with runtime.db.write() as conn:
            await conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(status=DeliveryStatus.SENT, provider="twilio-main")
            )
        applied = await runtime.receipts.apply_early()
        after = await runtime.receipts.apply_early()
        body = (await client.get(f"/api/v1/notifications/{notification_id}")).json()
        timeline = (await client.get(f"/api/v1/notifications/{notification_id}/timeline")).json()
    await runtime.close()

    assert early.json()["outcome"] == "early"
    assert unknown.json()["outcome"] == "unknown"
    assert (waited, applied, after) == (0, 1, 0)
    assert [d["status"] for d in body["deliveries"]] == ["DELIVERED"]
    assert body["status"] == "DELIVERED"
    receipts = [s for s in timeline["steps"] if s["step"] == "receipt"]
    assert [(s["status"], s["detail"]) for s in receipts] == [("delivered", "applied")]
