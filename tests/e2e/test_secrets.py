"""Secrets stay secret: API keys, provider credentials and webhook signing secrets appear in no
log line, error, API response (but the one that creates them) or metric, even at DEBUG and
while providers fail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_cli import herald
from tests.fakes.http_server import Response, running
from tests.fakes.twilio import FakeTwilio
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.herald_process import HeraldProcess
from tests.services import free_port

pytestmark = pytest.mark.slow

SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-token-5e3a9b1c7d"
SMTP_PASSWORD = "smtp-password-9f8e7d6c"


def wait_done(http: httpx.Client, notification_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = http.get(f"/api/v1/notifications/{notification_id}").json()
        if body["status"] not in ("PENDING", "SCHEDULED"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_no_secret_leaks_into_logs_errors_responses_or_metrics(tmp_path: Path) -> None:
    closed_port = free_port()  # nothing listens: the SMTP relay is "down"
    with running(FakeTwilio(SID, TWILIO_TOKEN)) as twilio, running(WebhookReceiver()) as hooks:
        assert isinstance(twilio, FakeTwilio)
        assert isinstance(hooks, WebhookReceiver)
        twilio.fail_next(1, Response.of_json(401, {"code": 20003, "message": "Authenticate"}))
        env = {
            "HERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'herald.db'}",
            "HERALD_LOG_LEVEL": "DEBUG",
            "HERALD_LOG_FORMAT": "json",
            "HERALD_SMTP_URL": f"smtp://herald:{SMTP_PASSWORD}@127.0.0.1:{closed_port}",
            "HERALD_RETRY_MAX_ATTEMPTS": "2",
            "HERALD_RETRY_BASE_SECONDS": "0.05",
            "HERALD_OUTBOUND_ALLOW": "127.0.0.0/8",
            "HERALD_PROVIDERS": json.dumps(
                {
                    "twilio": {
                        "type": "twilio",
                        "base_url": twilio.url,
                        "account_sid": SID,
                        "auth_token": TWILIO_TOKEN,
                        "from_number": "+15005550006",
                    }
                }
            ),
        }
        made = herald("keys", "create", "--name", "ops", "--scopes", "admin", env=env, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        api_key = made.stdout.strip()
        server = HeraldProcess(tmp_path, env).start()
        seen: list[str] = []  # every response body but the ones that hand a secret out
        try:
            headers = {"Authorization": f"Bearer {api_key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
                user = http.put(
                    "/api/v1/users/u1",
                    json={"webhook_url": f"{hooks.url}/h", "phone": "+14155550123"},
                )
                assert user.status_code == 201, user.text
                webhook_secret = user.json()["webhook_secret"]
                hooks.secrets.append(webhook_secret)
                rotated = http.post("/api/v1/users/u1/webhook-secret/rotate", json={})
                hooks.secrets.append(rotated.json()["webhook_secret"])
                # The tenant's own, for inline URLs.
                tenant_rotated = http.post("/api/v1/webhook-secret/rotate", json={})
                hooks.secrets.append(tenant_rotated.json()["webhook_secret"])
                ids = [
                    http.post(
                        "/api/v1/notifications",
                        json={
                            "user_id": "u1",
                            "channels": [channel],
                            "message": "hi",
                            "subject": "s",
                        },
                    ).json()["id"]
                    for channel in ("sms", "webhook")
                ]
                inline = http.post(
                    "/api/v1/notifications",
                    json={
                        "contacts": {"webhook_url": f"{hooks.url}/inline"},
                        "channels": ["webhook"],
                        "message": "hi",
                        "subject": "s",
                    },
                )
                ids.append(inline.json()["id"])
                mail = http.post(
                    "/api/v1/notifications",
                    json={"recipient": "a@example.com", "subject": "s", "message": "m"},
                )
                ids.append(mail.json()["id"])
                done = [wait_done(http, i) for i in ids]
                assert [d["status"] for d in done] == ["SENT", "SENT", "SENT", "FAILED"]
                assert len(hooks.verified) == 2
                for path in [
                    *(f"/api/v1/notifications/{i}" for i in ids),
                    *(f"/api/v1/notifications/{i}/timeline" for i in ids),
                    "/api/v1/notifications",
                    "/api/v1/users/u1",
                    "/api/v1/dead-letters",
                    "/api/v1/keys",
                    "/api/v1/providers",
                    "/api/v1/webhook-secret",
                    "/metrics",
                ]:
                    response = http.get(path)
                    assert response.status_code == 200, (path, response.text)
                    seen.append(response.text)
                letters = http.get("/api/v1/dead-letters").json()["items"]
                assert letters, "the failed email should be dead-lettered"
                seen.append(http.get(f"/api/v1/dead-letters/{letters[0]['id']}").text)
                # Refusals quote nothing of what was sent either.
                seen.append(
                    httpx.get(
                        f"{server.url}/api/v1/keys", headers={"Authorization": f"Bearer {api_key}x"}
                    ).text
                )
        finally:
            server.stop()
        log = server.log()

    assert "notification.accepted" in log
    assert "delivery" in log
    secrets = {
        "API key": api_key,
        "Twilio auth token": TWILIO_TOKEN,
        "SMTP password": SMTP_PASSWORD,
        "webhook secret": webhook_secret,
        "rotated webhook secret": hooks.secrets[1],
        "tenant webhook secret": hooks.secrets[2],
    }
    for what, secret in secrets.items():
        assert secret not in log, f"the {what} is in the log"
        for body in seen:
            assert secret not in body, f"the {what} is in a response: {body[:200]}"
