"""No caller can add email headers or recipients: line breaks (and NUL) in anything that
becomes a header are refused at the API with 422 naming the field, when a template renders,
and by the email channel itself before anything is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from herald import roles
from herald.api.app import create_app
from herald.domain.messages import Content, DeliveryJob
from herald.pipeline.envelope import envelope
from herald.runtime import Runtime
from herald.store import deadletters
from tests.conftest import settings_for
from tests.pipeline_harness import FAST
from tests.smtp_sink import SmtpSink

URL = "/api/v1/notifications"
SEED = {"recipient": "a@example.com", "subject": "Welcome", "message": "Welcome to Herald"}
BCC = "Bcc: victim@example.com"
# CRLF, LF, CR and the other breaks str.splitlines() knows, and NUL.
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00"]
GREETING = {
    "channels": {"email": {"default": {"subject": "Hi {{ name }}", "text": "Hello {{ name }}"}}}
}


def problem_fields(response: httpx.Response) -> list[str]:
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    return [e["field"] for e in body["errors"]]


def break_id(value: str) -> str:
    return f"U+{ord(value[-1]):04X}"


# -- the API refuses every vector, naming the field -------------------------------------------

VECTORS: list[tuple[dict[str, Any], str]] = [
    ({"subject": f"Hi\r\n{BCC}"}, "subject"),
    ({"recipient": "a@b.c\nBcc: x@y.z"}, "recipient"),
    ({"recipient": '"Name\r\n" <a@b.c>'}, "recipient"),
    ({"recipient": f"a@example.com\r\n{BCC}"}, "recipient"),
    (
        {"recipient": None, "contacts": {"email": f"a@example.com\r\n{BCC}"}},
        "contacts.email",
    ),
]


@pytest.mark.parametrize(("change", "field"), VECTORS)
async def test_a_notification_with_an_injection_is_refused_naming_the_field(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**SEED, **change}.items() if v is not None}
    response = await client.post(URL, json=body)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


@pytest.mark.parametrize("line_break", BREAKS, ids=break_id)
async def test_every_line_break_in_a_subject_or_address_is_refused(
    client: httpx.AsyncClient, line_break: str
) -> None:
    subject = await client.post(URL, json={**SEED, "subject": f"Hi{line_break}{BCC}"})
    assert subject.status_code == 422
    assert problem_fields(subject) == ["subject"]
    address = await client.post(URL, json={**SEED, "recipient": f"a@example.com{line_break}"})
    assert address.status_code == 422
    assert problem_fields(address) == ["recipient"]


@pytest.mark.parametrize(("change", "field"), VECTORS)
async def test_a_batch_item_with_an_injection_is_refused_naming_the_item(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    bad = {k: v for k, v in {**SEED, **change}.items() if v is not None}
    response = await client.post(f"{URL}/batch", json={"items": [SEED, bad]})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [f"items[1].{field}"]


@pytest.mark.parametrize(
    "email", [f"u@example.com\r\n{BCC}", '"Name\r\n" <u@example.com>', "u@example.com\u2028"]
)
async def test_a_user_email_with_a_line_break_is_refused(
    client: httpx.AsyncClient, email: str
) -> None:
    response = await client.put("/api/v1/users/u1", json={"email": email})
    assert response.status_code == 422
    assert problem_fields(response) == ["email"]


@pytest.mark.parametrize(
    ("channel", "field", "other"),
    [("email", "subject", {"text": "x"}), ("push", "title", {"body": "x"})],
)
@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\u2028", "\x00"], ids=break_id)
async def test_a_template_subject_with_a_line_break_is_refused(
    client: httpx.AsyncClient, channel: str, field: str, other: dict[str, str], line_break: str
) -> None:
    variant = {field: f"Hi{line_break}{BCC}", **other}
    response = await client.put(
        "/api/v1/templates/evil", json={"channels": {channel: {"default": variant}}}
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [f"channels.{channel}.default.{field}"]
    assert (await client.get("/api/v1/templates/evil")).status_code == 404


async def test_a_subject_rendered_with_a_line_break_is_refused_when_planned(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.put("/api/v1/templates/greeting", json=GREETING)).status_code == 201
    evil = {"recipient": "a@example.com", "template": "greeting", "data": {"name": f"A\r\n{BCC}"}}

    single = await client.post(URL, json=evil)
    assert single.status_code == 422, single.text
    assert problem_fields(single) == ["template"]
    assert "single line" in single.json()["message"]

    good = {**evil, "data": {"name": "Ann"}}
    batch = await client.post(f"{URL}/batch", json={"items": [good, evil]})
    assert batch.status_code == 202, batch.text
    first, second = batch.json()["items"]
    assert (first["status"], second["status"]) == (202, 422)
    assert [e["field"] for e in second["error"]["errors"]] == ["items[1].template"]

    preview = await client.post(
        "/api/v1/templates/greeting/preview", json={"data": {"name": f"A\u2028{BCC}"}}
    )
    assert preview.status_code == 422
    assert problem_fields(preview) == ["template"]


async def test_an_event_whose_data_would_break_the_subject_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/api/v1/templates/greeting", json=GREETING)
    await client.put("/api/v1/users/e1", json={"email": "e1@example.com"})
    rule = {"event_type": "signed.up", "channels": ["email"], "template": "greeting"}
    assert (await client.put("/api/v1/rules/greet", json=rule)).status_code == 201
    response = await client.post(
        "/api/v1/events",
        json={"type": "signed.up", "user_id": "e1", "data": {"name": f"E\n{BCC}"}},
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["template"]


# -- end to end: the real worker, SMTP client and SMTP server ----------------------------------


@asynccontextmanager
async def herald(
    database_url: str, sink: SmtpSink
) -> AsyncIterator[tuple[Runtime, Callable[[], None]]]:
    """A runtime whose relay and worker start only when the test calls ``start()``."""
    rt = Runtime(settings_for(database_url, smtp_url=sink.url, **FAST))
    await rt.start(migrate=False)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start() -> None:
        running = [*roles.relay_roles(rt).values(), *roles.worker_roles(rt, ["email"]).values()]
        tasks.extend(asyncio.create_task(role(stop)) for role in running)

    try:
        yield rt, start
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await rt.close()


async def wait_until_done(http: httpx.AsyncClient, notification_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        body: dict[str, Any] = (await http.get(f"{URL}/{notification_id}")).json()
        if body["status"] != "PENDING":
            return body
        assert asyncio.get_running_loop().time() < deadline, f"still PENDING: {body}"
        await asyncio.sleep(0.02)


async def test_a_rendered_subject_with_crlf_never_reaches_the_smtp_server(
    database_url: str, smtp_sink: SmtpSink
) -> None:
    async with herald(database_url, smtp_sink) as (rt, start):
        transport = httpx.ASGITransport(app=create_app(rt, open_access=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.put("/api/v1/templates/greeting", json=GREETING)).status_code == 201
            hostile = {"name": f"Ann\r\n{BCC}"}
            # A user's notification: it waits for the router, which is not running yet.
            user = await http.put("/api/v1/users/ann", json={"email": "a@example.com"})
            assert user.is_success
            request = {
                "user_id": "ann",
                "channels": ["email"],
                "template": "greeting",
                "data": hostile,
            }

            # The API renders at planning time, and refuses: nothing is stored.
            refused = await http.post(URL, json=request)
            assert refused.status_code == 422
            assert problem_fields(refused) == ["template"]

            # The last line of defence: a job that carries such a subject anyway (written by
            # another producer, or by a build without the check) reaches the real worker
            # before the notification's own job. The router and the relay are not running yet,
            # so the hostile job is first on the delivery's partition.
            accepted = await http.post(URL, json={**request, "data": {"name": "Ann"}})
            assert accepted.status_code == 202, accepted.text
            notification = accepted.json()
            [delivery] = notification["deliveries"]
            job = DeliveryJob(
                delivery_id=delivery["id"],
                notification_id=notification["id"],
                channel="email",
                recipient="a@example.com",
                user_key="ann",
                content=Content(subject=f"Hi Ann\r\n{BCC}", body="Hello Ann"),
            )
            await rt.bus.publish([envelope(rt.topics.deliveries("email"), job.user_key, job)])
            start()

            done = await wait_until_done(http, notification["id"])
            [outcome] = done["deliveries"]
            assert (done["status"], outcome["status"], outcome["attempts"]) == (
                "FAILED",
                "DEAD_LETTERED",
                1,
            )
            assert "line break" in outcome["last_error"]
            async with rt.db.read() as conn:
                [letter] = await deadletters.list_page(
                    conn, deadletters.Filters(status=None), limit=10
                )
            assert (letter.reason, letter.error_class) == ("permanent", "PermanentDeliveryError")

            # A clean notification after it arrives alone, to its one recipient.
            clean = await http.post(
                URL,
                json={"recipient": "b@example.com", "template": "greeting", "data": {"name": "Bo"}},
            )
            assert (await wait_until_done(http, clean.json()["id"]))["status"] == "SENT"
            [mail] = await smtp_sink.wait_for(1)
            await asyncio.sleep(0.2)  # anything else would have arrived by now
            assert smtp_sink.messages() == [mail]
            assert mail.rcpt_tos == ["b@example.com"]
            assert mail.message["Subject"] == "Hi Bo"
            assert mail.message["To"] == "b@example.com"
            assert "Bcc" not in mail.message
            assert "victim@example.com" not in mail.message.as_string()
