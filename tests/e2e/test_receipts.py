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
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.slow

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tw-auth-token-e2e-7d1c"
GOOD = [f"+1415555{n:04d}" for n in range(8)]
BAD = "+14155559999"  # an unknown handset: undelivered, error 30005


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
