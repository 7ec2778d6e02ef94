"""`herald serve` as a real process takes Twilio's status callbacks: the fake Twilio posts them
over HTTP to the StatusCallback URL Herald gave it, signed as Twilio signs them, a moment after
each text is accepted (one that comes before the worker has recorded the send waits for the
maintenance sweep, every second here). Every text ends as its callbacks say, the bounced number is
suppressed, and nothing the fake posted was refused."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import Deployment
from tests.fakes.http_server import running
from tests.fakes.mta import FakeMta
from tests.fakes.twilio import FakeTwilio
from tests.services import free_port

pytestmark = pytest.mark.slow

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tw-auth-token-e2e-7d1c"
GOOD = [f"+1415555{n:04d}" for n in range(8)]
BAD = "+14155559999"  # an unknown handset: undelivered, error 30005
URL = "/api/v1/notifications"
EMAIL = {"subject": "Your code", "message": "123456"}


async def wait_for(http: httpx.AsyncClient, notification_id: str, wanted: set[str]) -> str:
    for _ in range(1500):
        status: str = (await http.get(f"/api/v1/notifications/{notification_id}")).json()["status"]
        if status in wanted:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"{notification_id} never reached {wanted}: {status}")


async def test_twilios_callbacks_settle_every_text(deployment: Deployment) -> None:
    with running(FakeTwilio(SID, TOKEN)) as twilio:
        assert isinstance(twilio, FakeTwilio)
        twilio.post_callbacks = True
        twilio.callback_delay = 0.05
        twilio.fates[BAD] = [("sent", None), ("undelivered", "30005")]
        herald = deployment.process(
            HERALD_MAINTENANCE_INTERVAL_SECONDS="1",
            HERALD_PROVIDERS=json.dumps(
                {
                    "twilio-main": {
                        "type": "twilio",
                        "base_url": twilio.url,
                        "account_sid": SID,
                        "auth_token": TOKEN,
                        "from_number": "+15005550006",
                    }
                }
            ),
        )
        herald.env["HERALD_PUBLIC_URL"] = herald.url
        herald.start()
        try:
            async with httpx.AsyncClient(base_url=herald.url, timeout=10) as http:
                ids = {}
                for number in [*GOOD, BAD]:
                    accepted = await http.post(
                        "/api/v1/notifications",
                        json={"contacts": {"phone": number}, "channels": ["sms"], "message": "Hi"},
                    )
                    assert accepted.status_code == 202, accepted.text
                    ids[number] = accepted.json()["id"]
                final = {
                    n: await wait_for(http, i, {"DELIVERED", "FAILED"}) for n, i in ids.items()
                }
                suppressed = await http.get(f"/api/v1/suppressions/sms/{BAD}")
        finally:
            herald.stop()
        posted = list(twilio.callbacks_posted)

    assert final == {**dict.fromkeys(GOOD, "DELIVERED"), BAD: "FAILED"}
    assert suppressed.status_code == 200
    assert suppressed.json()["reason"] == "hard_bounce"
    assert len(posted) == 2 * len(ids)
    assert {answer for _, answer in posted} == {200}


async def test_a_bounce_comes_back_through_herald_inbound(deployment: Deployment) -> None:
    """`herald serve` sends through a mail server that bounces to `herald inbound`."""
    mta = FakeMta().start()
    mta.refuse["gone@example.org"] = ("failed", "5.1.1", "550 5.1.1 User unknown")
    inbound_port = free_port()
    settings = {"HERALD_SMTP_URL": mta.url, "HERALD_BOUNCE_DOMAIN": "bounces.herald.test"}
    herald = deployment.process(**settings).start()
    listener = deployment.process(
        ("inbound",), HERALD_INBOUND_PORT=str(inbound_port), **settings
    ).start()
    mta.bounce_to = ("127.0.0.1", inbound_port)
    try:
        listener.wait_for_log("inbound.listening")
        async with httpx.AsyncClient(base_url=herald.url, timeout=10) as http:
            gone = (await http.post(URL, json={**EMAIL, "recipient": "gone@example.org"})).json()
            fine = (await http.post(URL, json={**EMAIL, "recipient": "fine@example.org"})).json()
            bounced = await wait_for(http, gone["id"], {"FAILED"})
            sent = await wait_for(http, fine["id"], {"SENT"})
            body = (await http.get(f"{URL}/{gone['id']}")).json()
    finally:
        herald.stop()
        listener.stop()
        mta.stop()

    assert (bounced, sent) == ("FAILED", "SENT")
    assert body["deliveries"][0]["status"] == "BOUNCED"
    [(return_path, answer)] = mta.bounces_sent
    assert answer == "250"
    assert return_path == f"bounce+{body['deliveries'][0]['id']}@bounces.herald.test"


def test_herald_inbound_needs_a_bounce_domain(deployment: Deployment) -> None:
    listener = deployment.process(("inbound",)).start()
    assert listener.proc is not None
    assert listener.proc.wait(timeout=30) != 0
    assert "HERALD_BOUNCE_DOMAIN" in listener.log()
