"""The suppression list: an address on it is skipped by routing (``skip_reason: suppressed``, no
send), whichever way its notification goes (an inline recipient routed by intake, a user's
through the router, a staged batch's when written out), and sent to again once removed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from herald import roles
from tests.integration.test_multichannel import wait_for_status
from tests.pipeline_harness import Pipeline, PipelineFactory

URL = "/api/v1/suppressions"
DONE = {"SENT", "SKIPPED", "FAILED"}


async def _put(p: Pipeline, path: str, body: dict[str, Any] | None = None) -> Any:
    return await p.http.put(path, json=body) if body is not None else await p.http.put(path)


async def test_a_suppressed_address_is_skipped_until_it_is_removed(
    start_pipeline: PipelineFactory,
) -> None:
    async with start_pipeline(stage_batches_from=3) as p:
        added = await _put(p, f"{URL}/email/Bounced@Example.com", {"detail": "imported"})
        assert added.status_code == 201, added.text
        again = await _put(p, f"{URL}/email/bounced@example.com", {"reason": "complaint"})
        assert again.status_code == 200
        assert again.json() == added.json()  # kept as it was
        assert added.json()["address"] == "bounced@example.com"
        assert (await p.http.get(f"{URL}/email/BOUNCED@example.com")).status_code == 200

        inline = await p.send(recipient="bounced@example.com")
        other = await p.send(recipient="fine@example.com")
        user = await p.http.put("/api/v1/users/b1", json={"email": "Bounced@example.com"})
        assert user.status_code in (200, 201), user.text
        of_user = await p.send(recipient=None, user_id="b1", channels=["email"])
        batch = await p.http.post(
            "/api/v1/notifications/batch",
            json={
                "items": [
                    {"recipient": f"{name}@example.com", "subject": "Hi", "message": "Hello"}
                    for name in ("batch1", "bounced", "batch2")
                ]
            },
        )
        staged = [item["notification"]["id"] for item in batch.json()["items"]]

        done = {
            n_id: await wait_for_status(p, n_id, {"SENT", "SKIPPED", "FAILED"})
            for n_id in [inline["id"], other["id"], of_user["id"], *staged]
        }
        timeline = (await p.http.get(f"/api/v1/notifications/{inline['id']}/timeline")).json()
        mailed = {m.rcpt_tos[0] for m in p.sink.messages()}

        removed = await p.http.delete(f"{URL}/email/bounced@example.com")
        assert removed.status_code == 204
        assert (await p.http.delete(f"{URL}/email/bounced@example.com")).status_code == 404
        after = await p.send(recipient="bounced@example.com")
        sent_after = await wait_for_status(p, after["id"], {"SENT", "SKIPPED", "FAILED"})

    statuses = {n_id: body["status"] for n_id, body in done.items()}
    skipped = [inline["id"], of_user["id"], staged[1]]
    assert [statuses[n] for n in skipped] == ["SKIPPED"] * 3
    assert all(done[n]["deliveries"][0]["skip_reason"] == "suppressed" for n in skipped)
    assert [statuses[n] for n in (other["id"], staged[0], staged[2])] == ["SENT"] * 3
    assert "bounced@example.com" not in {r.lower() for r in mailed}
    assert any(s["step"] == "skipped" and s["detail"] == "suppressed" for s in timeline["steps"])
    assert sent_after["status"] == "SENT"  # off the list: sent again


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("put", f"{URL}/fax/123", None, "channel"),
        ("put", f"{URL}/email/not-an-address", None, "address"),
        ("put", f"{URL}/email/a@example.com", {"reason": "because"}, "reason"),
        ("put", f"{URL}/email/a@example.com", {"detail": "x" * 1001}, "detail"),
        ("get", f"{URL}?cursor=bm9wZQ", None, "cursor"),
        ("get", f"{URL}?limit=0", None, "limit"),
    ],
)
async def test_bad_input_is_named(
    pipeline: Pipeline, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    if method == "put":
        answer = await pipeline.http.put(path, json=body)
    else:
        answer = await pipeline.http.get(path)
    assert answer.status_code == 422, answer.text
    named = [e["field"] for e in answer.json()["errors"]]
    assert any(field in n for n in named), named


async def test_the_list_comes_in_pages_by_channel_and_address(pipeline: Pipeline) -> None:
    for address in ("c@example.com", "a@example.com", "b@example.com"):
        assert (await _put(pipeline, f"{URL}/email/{address}")).status_code == 201
    assert (await _put(pipeline, f"{URL}/sms/+14155550100")).status_code == 201
    first = (await pipeline.http.get(URL, params={"limit": 2})).json()
    rest = (await pipeline.http.get(URL, params={"cursor": first["next_cursor"]})).json()
    only_sms = (await pipeline.http.get(URL, params={"channel": "sms"})).json()

    listed = [(s["channel"], s["address"]) for s in first["items"] + rest["items"]]
    assert listed == [
        ("email", "a@example.com"),
        ("email", "b@example.com"),
        ("email", "c@example.com"),
        ("sms", "+14155550100"),
    ]
    assert rest["next_cursor"] is None
    assert [s["address"] for s in only_sms["items"]] == ["+14155550100"]
    assert all(s["reason"] == "manual" for s in rest["items"])


async def test_a_job_queued_before_its_address_was_suppressed_is_not_sent(
    start_pipeline: PipelineFactory,
) -> None:
    """The worker asks too, when it claims: a bounce that comes back while an email to the
    address waits in the queue (or for a retry, or a quiet hour) stops it there."""
    async with start_pipeline(channels=("inapp",)) as p:  # no email worker yet: jobs wait
        late = await p.send(recipient="late@example.com")
        fine = await p.send(recipient="fine@example.com")
        assert (await _put(p, f"{URL}/email/Late@Example.com")).status_code == 201
        stop = asyncio.Event()
        worker = asyncio.create_task(roles.channel_worker(p.runtime, "email")(stop))
        try:
            done = {n["id"]: await wait_for_status(p, n["id"], DONE) for n in (late, fine)}
            timeline = (await p.http.get(f"/api/v1/notifications/{late['id']}/timeline")).json()
        finally:
            stop.set()
            await worker

    skipped = done[late["id"]]
    assert skipped["status"] == "SKIPPED"
    assert skipped["deliveries"][0]["skip_reason"] == "suppressed"
    assert skipped["deliveries"][0]["attempts"] == 0
    assert [s["detail"] for s in timeline["steps"] if s["step"] == "skipped"] == ["suppressed"]
    assert done[fine["id"]]["status"] == "SENT"
    assert [m.rcpt_tos for m in p.sink.messages()] == [["fine@example.com"]]


async def test_unsubscribing_from_everything_suppresses_the_users_addresses(
    pipeline: Pipeline,
) -> None:
    """Not only the user's own notifications are skipped (its preferences do that): its
    address is suppressed for inline ones too, and comes off when it subscribes again; an
    address suppressed for another cause stays."""
    p = pipeline
    user = {"email": "Quits@Example.com", "phone": "+14155550199"}
    assert (await p.http.put("/api/v1/users/q1", json=user)).status_code == 201
    manual = await _put(p, f"{URL}/sms/+14155550199", {"detail": "asked by phone"})
    assert manual.status_code == 201

    quit_all = await p.http.put("/api/v1/users/q1/preferences", json={"unsubscribed": True})
    assert quit_all.status_code == 200, quit_all.text
    email = (await p.http.get(f"{URL}/email/quits@example.com")).json()
    inline = await p.send(recipient="quits@example.com")
    skipped = await wait_for_status(p, inline["id"], DONE)

    # A new address while unsubscribed: suppressed instead of the old one.
    moved = await p.http.put("/api/v1/users/q1", json={**user, "email": "new@example.com"})
    assert moved.status_code == 200, moved.text
    new_email = await p.http.get(f"{URL}/email/new@example.com")
    old_email = await p.http.get(f"{URL}/email/quits@example.com")
    await p.http.put("/api/v1/users/q1", json=user)  # and back

    back = await p.http.put("/api/v1/users/q1/preferences", json={"unsubscribed": False})
    assert back.status_code == 200
    after_email = await p.http.get(f"{URL}/email/quits@example.com")
    after_sms = await p.http.get(f"{URL}/sms/+14155550199")
    again = await p.send(recipient="quits@example.com")
    sent = await wait_for_status(p, again["id"], DONE)

    assert email["reason"] == "unsubscribe"
    assert email["detail"] == "user q1 unsubscribed from everything"
    assert skipped["status"] == "SKIPPED"
    assert skipped["deliveries"][0]["skip_reason"] == "suppressed"
    assert new_email.json()["reason"] == "unsubscribe"
    assert old_email.status_code == 404
    assert after_email.status_code == 404
    assert (await p.http.get(f"{URL}/email/new@example.com")).status_code == 404
    assert after_sms.json()["detail"] == "asked by phone"  # suppressed before, for its own cause
    assert sent["status"] == "SENT"
    unknown = await p.http.put("/api/v1/users/nobody/preferences", json={"unsubscribed": True})
    assert unknown.status_code == 404
