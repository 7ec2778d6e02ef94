"""A push token FCM calls UNREGISTERED is removed from its user: the delivery to it is parked,
the timeline says the address was removed, and the next notification does not try it. (Web
Push's 404/410 take the same way: SubscriptionGoneError is an AddressGoneError; see also
tests/integration/test_users.py for the stored list.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from herald.channels.webpush import SubscriptionGoneError
from herald.clock import utcnow
from herald.errors import AddressGoneError
from herald.store import users
from herald.store.database import Database
from herald.store.users import Profile, subscription_address
from tests.fakes.fcm import FakeFcm
from tests.fakes.http_server import running
from tests.integration.test_channel_fcm import EMAIL, PROJECT, _pem, service_account
from tests.integration.test_multichannel import wait_for_status
from tests.pipeline_harness import PipelineFactory

DONE = {"SENT", "PARTIALLY_SENT", "FAILED", "SKIPPED"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake_fcm(rsa_key: rsa.RSAPrivateKey) -> Iterator[FakeFcm]:
    with running(FakeFcm(rsa_key.public_key(), EMAIL, PROJECT)) as server:
        yield server


def fcm_settings(fake: FakeFcm, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    provider = {
        "type": "fcm",
        "project_id": PROJECT,
        "service_account_json": service_account(_pem(key), fake.token_uri),
        "endpoint": fake.url,
        "timeout_seconds": 2.0,
    }
    return {"providers": {"fcm-main": provider}, "channel_providers": {"push": ["fcm-main"]}}


async def test_a_token_fcm_calls_unregistered_is_removed_from_its_user(
    start_pipeline: PipelineFactory, fake_fcm: FakeFcm, rsa_key: rsa.RSAPrivateKey
) -> None:
    fake_fcm.unregister("dead-token")
    async with start_pipeline(channels=("email", "push"), **fcm_settings(fake_fcm, rsa_key)) as p:
        made = await p.http.put(
            "/api/v1/users/u1", json={"push_tokens": ["live-token", "dead-token"]}
        )
        assert made.status_code in (200, 201), made.text
        first = await p.send(recipient=None, user_id="u1", channels=["push"])
        done = await wait_for_status(p, first["id"], DONE)
        user = (await p.http.get("/api/v1/users/u1")).json()
        timeline = (await p.http.get(f"/api/v1/notifications/{first['id']}/timeline")).json()
        second = await p.send(recipient=None, user_id="u1", channels=["push"])
        again = await wait_for_status(p, second["id"], DONE)

    by_token = {d["recipient"]: d["status"] for d in done["deliveries"]}
    assert by_token == {"live-token": "SENT", "dead-token": "DEAD_LETTERED"}
    assert done["status"] == "PARTIALLY_SENT"
    assert user["push_tokens"] == ["live-token"]
    removed = [s for s in timeline["steps"] if s["step"] == "address_removed"]
    assert [(s["channel"], s["delivery_id"] is not None) for s in removed] == [("push", True)]
    assert again["status"] == "SENT"
    assert [d["recipient"] for d in again["deliveries"]] == ["live-token"]
    assert [push.message["token"] for push in fake_fcm.pushes] == ["live-token"] * 2


async def test_a_gone_subscription_is_forgotten_and_nothing_else(db: Database) -> None:
    assert issubclass(SubscriptionGoneError, AddressGoneError)
    keep = {"endpoint": "https://push.example/keep", "keys": {"p256dh": "a", "auth": "b"}}
    gone = {"endpoint": "https://push.example/gone", "keys": {"p256dh": "c", "auth": "d"}}
    now = utcnow()
    async with db.write() as conn:
        profile = Profile(push_tokens=["t1"], web_push=[keep, gone])
        await users.put(conn, "default", "w1", profile, now)
        assert await users.forget_address(
            conn, "default", "w1", "webpush", subscription_address(gone), now
        )
        # Already gone, another user's, another channel: nothing to remove.
        assert not await users.forget_address(
            conn, "default", "w1", "webpush", subscription_address(gone), now
        )
        assert not await users.forget_address(conn, "default", "nobody", "push", "t1", now)
        assert not await users.forget_address(conn, "default", "w1", "email", "t1", now)
        found = await users.get(conn, "default", "w1")
    assert found is not None
    assert found.profile.web_push == [keep]
    assert found.profile.push_tokens == ["t1"]
