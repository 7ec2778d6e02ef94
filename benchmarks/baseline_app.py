"""The baseline: the same job done the usual Python way, FastAPI + Celery on Redis + smtplib.

    POST /api/v1/notifications -> send_email.delay(...) -> Celery worker -> SMTP

Configured by environment variables so the API and the worker (two processes) agree:
BASELINE_BROKER_URL, BASELINE_KEY_PREFIX (so runs never collide on the shared Redis),
BASELINE_SMTP_HOST and BASELINE_SMTP_PORT. benchmarks/baseline_celery.py starts both.
"""

from __future__ import annotations

import os
import smtplib
import uuid
from email.message import EmailMessage

from celery import Celery
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, EmailStr

BROKER_URL = os.environ.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/15")
KEY_PREFIX = os.environ.get("BASELINE_KEY_PREFIX", "baseline:")
SMTP_HOST = os.environ.get("BASELINE_SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("BASELINE_SMTP_PORT", "25"))
SENDER = "Baseline <baseline@example.com>"

celery = Celery("baseline", broker=BROKER_URL)
celery.conf.update(
    broker_transport_options={"global_keyprefix": KEY_PREFIX},
    # Fire and forget, as most teams run it: no result backend.
    task_ignore_result=True,
    # The at-least-once settings a careful team adds: ack after the task ran, and requeue
    # the task if its worker process dies mid-send.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@celery.task(
    autoretry_for=(smtplib.SMTPException, ConnectionError, OSError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def send_email(notification_id: str, recipient: str, subject: str, body: str) -> None:
    mail = EmailMessage()
    mail["From"] = SENDER
    mail["To"] = recipient
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{notification_id}@example.com>"
    # The benchmark matches arrivals to acceptances by this header.
    mail["X-Notification-Id"] = notification_id
    mail.set_content(body)
    # A connection per email: what smtplib examples and most task code do.
    with smtplib.SMTP(SMTP_HOST, SMTP_PORT, timeout=30) as smtp:
        smtp.send_message(mail)


class NotificationIn(BaseModel):
    recipient: EmailStr
    subject: str
    message: str
    user_id: str | None = None


api = FastAPI(title="baseline")


@api.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# A plain `def`: .delay() is a blocking Redis call, so FastAPI runs it in its thread pool
# rather than on the event loop. The Idempotency-Key header is accepted and ignored.
@api.post("/api/v1/notifications", status_code=202)
def create_notification(payload: NotificationIn) -> JSONResponse:
    notification_id = uuid.uuid4().hex
    send_email.delay(notification_id, payload.recipient, payload.subject, payload.message)
    return JSONResponse({"id": notification_id, "status": "accepted"}, status_code=202)
