"""One event, many channels: users, preferences, templates, rules, quiet hours, failover and
collapse keys, each against real servers (SMTP sink, Twilio-speaking and webhook receivers
over HTTP, the inbox in the database)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from herald import roles
from herald.domain import templates as rendering
from tests.fakes.http_server import Response, running
from tests.fakes.twilio import FakeTwilio
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.pipeline_harness import Pipeline, PipelineFactory
from tests.services import free_port

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tw-auth-token-4f1c9e77d2"
CHANNELS = ("email", "sms", "webhook", "inapp", "apprise")

ORDER_TEMPLATE = {
    "category": "orders",
    "channels": {
        "email": {
            "default": {
                "subject": "Order {{ order.id }} shipped",
                "text": "Hi {{ name }}, order {{ order.id }} is on its way.",
                "html": "<p>Hi {{ name }}, order {{ order.id }} is on its way.</p>",
            },
            "pt": {"subject": "Pedido {{ order.id }} enviado", "text": "Olá {{ name }}!"},
        },
        "sms": {"default": {"text": "Order {{ order.id }} shipped"}},
        "webhook": {"default": {"subject": "order.shipped", "text": "{{ order.id }}"}},
        "inapp": {"default": {"title": "Shipped", "body": "Order {{ order.id }} shipped"}},
        "apprise": {"default": {"title": "Shipped", "body": "Order {{ order.id }}"}},
    },
}


def twilio_provider(name: str, server: FakeTwilio) -> dict[str, Any]:
    return {
        name: {
            "type": "twilio",
            "base_url": server.url,
            "account_sid": SID,
            "auth_token": TOKEN,
            "from_number": "+15005550006",
        }
    }


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with running(FakeTwilio(SID, TOKEN)) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running(WebhookReceiver()) as server:
        yield server


async def put(pipeline: Pipeline, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await pipeline.http.put(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def register(
    pipeline: Pipeline, receiver: WebhookReceiver, user_id: str = "u1", **profile: Any
) -> dict[str, Any]:
    user = await put(
        pipeline,
        f"/api/v1/users/{user_id}",
        {
            "email": f"{user_id}@example.com",
            "phone": "+14155550100",
            "webhook_url": f"{receiver.url}/hooks/{user_id}",
            "apprise_urls": [f"json://127.0.0.1:{receiver.port}/apprise/{user_id}"],
            **profile,
        },
    )
    assert user["webhook_secret"].startswith("whsec_")  # shown once, at creation
    receiver.secrets.append(user["webhook_secret"])
    return user


async def wait_for_status(
    pipeline: Pipeline, notification_id: str, wanted: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await pipeline.get(notification_id)
        if body["status"] in wanted:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def test_an_event_fans_out_to_every_allowed_channel_and_skips_an_opted_out_one(
    start_pipeline: PipelineFactory, twilio: FakeTwilio, receiver: WebhookReceiver
) -> None:
    async with start_pipeline(channels=CHANNELS, providers=twilio_provider("twilio", twilio)) as p:
        await register(p, receiver)
        await put(p, "/api/v1/users/u1/preferences", {"channels": {"apprise": False}})
        await put(p, "/api/v1/templates/order-shipped", ORDER_TEMPLATE)
        rule = {
            "event_type": "order.shipped",
            "channels": list(CHANNELS),
            "template": "order-shipped",
        }
        await put(p, "/api/v1/rules/shipped", rule)

        response = await p.http.post(
            "/api/v1/events",
            json={
                "type": "order.shipped",
                "user_id": "u1",
                "data": {"name": "Ana", "order": {"id": "A-1"}},
            },
            headers={"Idempotency-Key": "evt-1"},
        )
        assert response.status_code == 202, response.text
        event = response.json()
        assert event["matched_rules"] == ["shipped"]
        done = await wait_for_status(p, event["notification"]["id"], {"SENT"})
        mails = await p.sink.wait_for(1)
        sms = twilio.messages
        await receiver.wait_for(1, "/hooks/u1")
        inbox = (await p.http.get("/api/v1/users/u1/inbox")).json()

    by_channel = {d["channel"]: d for d in done["deliveries"]}
    assert {c: d["status"] for c, d in by_channel.items()} == {
        "email": "SENT",
        "sms": "SENT",
        "webhook": "SENT",
        "inapp": "SENT",
        "apprise": "SKIPPED",
    }
    assert by_channel["apprise"]["skip_reason"] == "channel_opted_out"
    assert by_channel["sms"]["provider"] == "twilio"
    assert mails[0].message["Subject"] == "Order A-1 shipped"
    assert [m.body for m in sms] == ["Order A-1 shipped"]
    assert len(receiver.verified) == 1
    assert receiver.unverified == []
    assert json.loads(receiver.verified[0].body)["body"] == "A-1"
    assert receiver.received("/apprise") == []  # opted out: nothing reached it
    assert inbox["unread"] == 1
    assert inbox["items"][0]["body"] == "Order A-1 shipped"


async def test_quiet_hours_defer_then_deliver_and_a_critical_category_goes_at_once(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    async with start_pipeline(critical_categories=["security"]) as p:
        # Once the pipeline runs: whole seconds, as the window is stored, ending a few seconds
        # from now (the first message through a fresh Kafka deployment can take 4-5 s).
        now = datetime.now(UTC)
        ends = (now + timedelta(seconds=8)).replace(microsecond=0)
        quiet = {
            "start": (now - timedelta(hours=1)).strftime("%H:%M:%S"),
            "end": ends.strftime("%H:%M:%S"),
        }
        await put(p, "/api/v1/users/q1", {"email": "q1@example.com", "timezone": "UTC"})
        await put(p, "/api/v1/users/q1/preferences", {"quiet_hours": quiet})
        ask = {"user_id": "q1", "recipient": None, "channels": ["email"]}
        normal = await p.send(**ask, category="news")
        critical = await p.send(**ask, category="security")
        await wait_for_status(p, normal["id"], {"SENT"}, timeout=30)
        mails = await p.sink.wait_for(2)
        timeline = (await p.http.get(f"/api/v1/notifications/{normal['id']}/timeline")).json()

    arrived = {m.notification_id: m.arrived for m in mails}
    assert arrived[critical["id"]] < ends.timestamp()  # at once, through quiet hours
    assert arrived[normal["id"]] >= ends.timestamp()  # held until the window ended
    steps = [s["step"] for s in timeline["steps"]]
    assert "deferred" in steps
    assert steps.index("deferred") < steps.index("sent")
    detail = next(s["detail"] for s in timeline["steps"] if s["step"] == "deferred")
    assert detail == f"quiet_hours until {ends.isoformat()}"


async def test_failover_to_the_second_sms_provider_records_which_sent(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    with running(FakeTwilio(SID, TOKEN)) as primary, running(FakeTwilio(SID, TOKEN)) as backup:
        primary.fail_next(1000, Response.of_json(503, {"code": 20503, "message": "down"}))
        providers = {
            **twilio_provider("twilio-main", primary),
            **twilio_provider("twilio-backup", backup),
        }
        async with start_pipeline(
            channels=("email", "sms"),
            providers=providers,
            channel_providers={"sms": ["twilio-main", "twilio-backup"]},
            circuit_failure_threshold=2,
            circuit_reset_seconds=60,
            retry_max_attempts=5,
        ) as p:
            ids = []
            for i in range(4):
                body = await p.send(
                    recipient=None, contacts={"phone": f"+1415555010{i}"}, channels=["sms"]
                )
                ids.append(body["id"])
            done = [await wait_for_status(p, i, {"SENT", "FAILED", "PARTIALLY_SENT"}) for i in ids]

    assert [n["status"] for n in done] == ["SENT"] * 4
    assert {n["deliveries"][0]["provider"] for n in done} == {"twilio-backup"}
    assert len(backup.messages) == 4
    assert len(primary.requests) >= 2  # it was tried until its circuit opened
    detail = done[0]["deliveries"][0]
    assert detail["history"][-1]["provider"] == "twilio-backup"


async def test_of_three_pending_notifications_with_one_collapse_key_only_the_newest_is_sent(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline() as p:
        send_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        sent = [
            await p.send(
                recipient="c@example.com",
                subject=f"Score {n}",
                collapse_key="score",
                send_at=send_at,
            )
            for n in range(3)
        ]
        assert [s["status"] for s in sent] == ["SCHEDULED"] * 3
        newest = await wait_for_status(p, sent[2]["id"], {"SENT"})
        older = [await p.get(s["id"]) for s in sent[:2]]
        await asyncio.sleep(0.5)
        mails = list(p.sink.received)

    assert newest["status"] == "SENT"
    assert [o["status"] for o in older] == ["CANCELLED", "CANCELLED"]
    assert [o["deliveries"][0]["skip_reason"] for o in older] == ["superseded", "superseded"]
    assert [m.message["Subject"] for m in mails] == ["Score 2"]


async def test_a_cancelled_scheduled_notification_is_not_sent_when_due(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline() as p:
        send_at = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
        kept = await p.send(recipient="kept@example.com", subject="Kept", send_at=send_at)
        dropped = await p.send(recipient="dropped@example.com", subject="Dropped", send_at=send_at)
        url = f"/api/v1/notifications/{dropped['id']}/cancel"
        cancelled = await p.http.post(url)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "CANCELLED"
        assert cancelled.json()["deliveries"][0]["skip_reason"] == "cancelled"
        again = await p.http.post(url)
        assert again.status_code == 409
        assert again.json()["errors"][0]["field"] == "status"
        assert (await wait_for_status(p, kept["id"], {"SENT"}))["status"] == "SENT"
        late = await p.http.post(f"/api/v1/notifications/{kept['id']}/cancel")
        assert late.status_code == 409  # sent already
        await asyncio.sleep(1.0)  # the cancelled one fell due with the other
        mails = list(p.sink.received)
        steps = (await p.http.get(f"/api/v1/notifications/{dropped['id']}/timeline")).json()
        nobody = "01900000-0000-7000-8000-000000000000"
        missing = await p.http.post(f"/api/v1/notifications/{nobody}/cancel")

    assert [m.message["Subject"] for m in mails] == ["Kept"]
    assert "cancelled" in [s["step"] for s in steps["steps"]]
    assert missing.status_code == 404


async def test_inbox_stream_receives_a_new_item(
    start_pipeline: PipelineFactory, receiver: WebhookReceiver
) -> None:
    async with start_pipeline(channels=("email", "inapp")) as p:
        await put(p, "/api/v1/users/s1", {"email": "s1@example.com"})
        received: list[dict[str, Any]] = []
        # A real HTTP server: the in-process test transport buffers whole responses.
        port = free_port()
        stop = asyncio.Event()
        server = asyncio.create_task(
            roles.api(p.runtime, "127.0.0.1", port, open_by_default=True)(stop)
        )

        async def listen() -> None:
            url = f"http://127.0.0.1:{port}/api/v1/users/s1/inbox/stream"
            async with httpx.AsyncClient() as http, http.stream("GET", url) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
                        return

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.2)
        sent = await p.send(user_id="s1", recipient=None, channels=["inapp"], subject="Hi")
        await asyncio.wait_for(listener, 20)
        marked = await p.http.post("/api/v1/users/s1/inbox/mark", json={"all": True})
        stop.set()
        await server

    assert received[0]["notification_id"] == sent["id"]
    assert (received[0]["title"], received[0]["status"]) == ("Hi", "unread")
    assert marked.json() == {"changed": 1, "unread": 0}


# -- the API alone: templates, locales, variables, escaping, rules -----------------------------


async def test_templates_render_per_locale_refuse_missing_variables_and_escape_html(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.put("/api/v1/templates/order-shipped", json=ORDER_TEMPLATE)).json()
    assert created["version"] == 1
    again = (await client.put("/api/v1/templates/order-shipped", json=ORDER_TEMPLATE)).json()
    assert again["version"] == 2

    data = {"name": "<script>x</script>", "order": {"id": "A-7"}}
    preview = await client.post(
        "/api/v1/templates/order-shipped/preview",
        json={"data": data, "locale": "pt-BR", "channels": ["email", "sms"]},
    )
    assert preview.status_code == 200, preview.text
    email, sms = preview.json()["rendered"]
    assert (email["locale"], email["subject"]) == ("pt", "Pedido A-7 enviado")
    assert sms["locale"] == "default"

    html = (
        await client.post(
            "/api/v1/templates/order-shipped/preview", json={"data": data, "channels": ["email"]}
        )
    ).json()["rendered"][0]
    assert "&lt;script&gt;" in html["html"]
    assert "<script>" not in html["html"]
    assert "<script>x</script>" in html["body"]  # plain text is not HTML-escaped

    missing = await client.post(
        "/api/v1/notifications",
        json={"recipient": "a@example.com", "template": "order-shipped", "data": {"name": "A"}},
    )
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["data.order"]
    assert "'order'" in missing.json()["message"]


async def test_a_template_that_would_stall_a_worker_is_refused_at_preview_and_at_send(
    client: httpx.AsyncClient,
) -> None:
    loops = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    hostile = {"channels": {"email": {"default": {"subject": "Hi", "text": loops}}}}
    saved = await client.put("/api/v1/templates/spin", json=hostile)
    assert saved.status_code == 201, saved.text  # it compiles; only running it costs

    preview = await client.post("/api/v1/templates/spin/preview", json={"data": {}})
    send = await client.post(
        "/api/v1/notifications",
        json={"recipient": "a@example.com", "template": "spin", "data": {}},
    )
    for response in (preview, send):
        assert response.status_code == 422, response.text
        assert "more than 50000 steps" in response.json()["message"]
    assert (await client.get("/api/v1/notifications")).json()["items"] == []


async def test_templates_render_off_the_event_loop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render may take up to its budget; the loop serving other requests must not wait."""
    threads: list[threading.Thread] = []
    render = rendering.render

    def recording(*args: Any, **kwargs: Any) -> dict[str, str]:
        threads.append(threading.current_thread())
        return render(*args, **kwargs)

    monkeypatch.setattr(rendering, "render", recording)
    template = {"channels": {"email": {"default": {"subject": "Hi", "text": "{{ name }}"}}}}
    assert (await client.put("/api/v1/templates/t", json=template)).status_code == 201
    preview = await client.post("/api/v1/templates/t/preview", json={"data": {"name": "A"}})
    send = await client.post(
        "/api/v1/notifications",
        json={"recipient": "a@example.com", "template": "t", "data": {"name": "A"}},
    )
    assert (preview.status_code, send.status_code) == (200, 202)
    assert len(threads) == 2
    assert threading.main_thread() not in threads


async def test_rule_conditions_choose_channels_and_bad_ones_are_refused(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/api/v1/templates/order-shipped", json=ORDER_TEMPLATE)
    await client.put("/api/v1/users/r1", json={"email": "r1@example.com", "phone": "+14155550199"})
    base = {"event_type": "order.placed", "template": "order-shipped"}
    assert (
        await client.put("/api/v1/rules/mail", json={**base, "channels": ["email"]})
    ).status_code == 201
    big = {**base, "channels": ["inapp"], "condition": "data.amount > 1000", "priority": "high"}
    assert (await client.put("/api/v1/rules/big", json=big)).status_code == 201

    bad = await client.put(
        "/api/v1/rules/bad", json={**base, "channels": ["email"], "condition": "data.amount >"}
    )
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["condition"]

    async def channels_for(amount: int) -> list[str]:
        response = await client.post(
            "/api/v1/events",
            json={
                "type": "order.placed",
                "user_id": "r1",
                "data": {"amount": amount, "order": {"id": "1"}, "name": "R"},
            },
        )
        assert response.status_code == 202, response.text
        return response.json()["notification"]["channels"]

    assert await channels_for(10) == ["email"]
    assert sorted(await channels_for(5000)) == ["email", "inapp"]
    none = await client.post("/api/v1/events", json={"type": "order.unknown", "user_id": "r1"})
    assert none.json() == {"type": "order.unknown", "matched_rules": [], "notification": None}


async def test_an_event_no_rule_matches_still_spends_its_idempotency_key(
    client: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "evt-unmatched"}
    event = {"type": "order.unknown", "user_id": "r1"}
    first = await client.post("/api/v1/events", json=event, headers=key)
    assert first.status_code == 202
    assert first.json()["notification"] is None
    again = await client.post("/api/v1/events", json=event, headers=key)
    assert again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    other = await client.post("/api/v1/events", json={**event, "user_id": "r2"}, headers=key)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_batch_accepts_good_items_and_reports_bad_ones(client: httpx.AsyncClient) -> None:
    items = [
        {"recipient": f"b{i}@example.com", "subject": "S", "message": "M"} for i in range(3)
    ] + [{"recipient": "x@example.com", "message": "no subject"}]
    response = await client.post("/api/v1/notifications/batch", json={"items": items})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (3, 1)
    assert [i["status"] for i in body["items"]] == [202, 202, 202, 422]
    assert body["items"][3]["error"]["errors"][0]["field"] == "items[3].subject"


@pytest.mark.parametrize("idempotency_key", [None, "batch-1"])
@pytest.mark.parametrize("size", [1, 2])
async def test_a_batch_of_only_refused_items_reports_each(
    client: httpx.AsyncClient, size: int, idempotency_key: str | None
) -> None:
    """Found by fuzzing: a batch of one item that could not be planned answered 500."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    items = [{"recipient": "x@example.com", "message": "no subject"}] * size
    response = await client.post(
        "/api/v1/notifications/batch", json={"items": items}, headers=headers
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (0, size)
    assert [i["status"] for i in body["items"]] == [422] * size
    assert body["items"][0]["error"]["errors"][0]["field"] == "items[0].subject"
    assert (await client.get("/api/v1/notifications")).json()["items"] == []


async def test_a_recipient_gets_no_more_sms_a_day_than_the_cap(
    start_pipeline: PipelineFactory, twilio: FakeTwilio
) -> None:
    async with start_pipeline(
        channels=("email", "sms"),
        providers=twilio_provider("twilio", twilio),
        daily_caps={"sms": 3},
    ) as p:
        phone = {"phone": "+14155550199"}
        sent = [
            await p.send(recipient=None, contacts=phone, channels=["sms"], message=f"code {i}")
            for i in range(5)
        ]
        other = await p.send(
            recipient=None, contacts={"phone": "+14155550100"}, channels=["sms"], message="hi"
        )
        done = [await wait_for_status(p, s["id"], {"SENT", "SKIPPED"}) for s in [*sent, other]]
        timeline = (await p.http.get(f"/api/v1/notifications/{sent[-1]['id']}/timeline")).json()

    assert [n["status"] for n in done] == ["SENT"] * 3 + ["SKIPPED"] * 2 + ["SENT"]
    assert [n["deliveries"][0]["skip_reason"] for n in done[3:5]] == ["daily_cap"] * 2
    # The provider saw exactly the capped number for that phone; the other phone is its own.
    assert sorted(m.to for m in twilio.messages) == ["+14155550100"] + ["+14155550199"] * 3
    assert any(s["step"] == "skipped" and s["detail"] == "daily_cap" for s in timeline["steps"])
